"""Published SSD weights (Caffe .caffemodel, ssd.pytorch .pth) read without Caffe or PyTorch.

    protobuf_wire.py  the protobuf wire format (varints, length-delimited fields)
    caffe.py          .caffemodel -> {Caffe layer name: [blobs]} (V2 `layer` and V1 `layers`)
    torch_pickle.py   .pth (zip and legacy torch formats) -> {key: array}, allow-list unpickler
    mapping.py        source names -> this library's layers, Caffe/torch layouts -> Keras
    convert.py        a whole file (also ssd_keras .h5) -> a run directory, or an ImageNet base ->
                      a model's base
"""
