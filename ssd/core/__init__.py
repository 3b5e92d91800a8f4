"""Box maths shared by training and inference: formats, default boxes, coding, matching, loss, post-processing."""
