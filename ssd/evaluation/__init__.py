"""Pascal VOC evaluation (devkit-exact), the loop that drives it, results files and reports."""
