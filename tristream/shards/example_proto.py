"""The ``tf.train`` Example protos (Feature, Features, SequenceExample, ...) built at import.

The wire format of ``tensorflow/core/example/{example,feature}.proto`` is
declared here field by field and compiled by protobuf into message classes in
a private descriptor pool, so the shard reader needs neither TensorFlow nor a
package that pulls in torch (the ``tfrecord`` package's own protos come with
an ``import torch``), and never clashes with TensorFlow's classes when both
are loaded.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    msg,
    name: str,
    number: int,
    kind: int,
    label: int = _F.LABEL_OPTIONAL,
    type_name: str | None = None,
    oneof: int | None = None,
    packed: bool = False,
) -> None:
    f = msg.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        f.type_name = type_name
    if oneof is not None:
        f.oneof_index = oneof
    if packed:
        f.options.packed = True


def _map(msg, name: str, value_type: str) -> None:
    """A ``map<string, value_type> name = 1`` field (an entry message plus a repeated field)."""
    entry = msg.nested_type.add(name=name.title().replace("_", "") + "Entry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_MESSAGE, type_name=value_type)
    entry_type = f".tensorflow.{msg.name}.{entry.name}"
    _field(msg, name, 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, entry_type)


def _build() -> dict[str, type]:
    fd = descriptor_pb2.FileDescriptorProto(
        name="tristream/tf_example.proto", package="tensorflow", syntax="proto3"
    )
    rep = _F.LABEL_REPEATED
    _field(fd.message_type.add(name="BytesList"), "value", 1, _F.TYPE_BYTES, rep)
    _field(fd.message_type.add(name="FloatList"), "value", 1, _F.TYPE_FLOAT, rep, packed=True)
    _field(fd.message_type.add(name="Int64List"), "value", 1, _F.TYPE_INT64, rep, packed=True)
    feature = fd.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, kind) in enumerate(
        [("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")], 1
    ):
        _field(feature, name, number, _F.TYPE_MESSAGE, type_name=f".tensorflow.{kind}", oneof=0)
    _map(fd.message_type.add(name="Features"), "feature", ".tensorflow.Feature")
    flist = fd.message_type.add(name="FeatureList")
    _field(flist, "feature", 1, _F.TYPE_MESSAGE, rep, ".tensorflow.Feature")
    _map(fd.message_type.add(name="FeatureLists"), "feature_list", ".tensorflow.FeatureList")
    example = fd.message_type.add(name="Example")
    _field(example, "features", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.Features")
    seq = fd.message_type.add(name="SequenceExample")
    _field(seq, "context", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.Features")
    _field(seq, "feature_lists", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.FeatureLists")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    names = ["BytesList", "FloatList", "Int64List", "Feature", "Features", "FeatureList",
             "FeatureLists", "Example", "SequenceExample"]  # fmt: skip
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{n}"))
            for n in names}  # fmt: skip


_CLASSES = _build()
Feature = _CLASSES["Feature"]
Features = _CLASSES["Features"]
FeatureList = _CLASSES["FeatureList"]
FeatureLists = _CLASSES["FeatureLists"]
Example = _CLASSES["Example"]
SequenceExample = _CLASSES["SequenceExample"]
