//! The part of `onnx.proto` (ONNX IR version 3 to 10) the importer reads, as `prost` messages.
//! Field numbers and types are those of onnx.proto; fields the importer has no use for are
//! left out, so `prost` skips them without allocating. Left out on purpose: the graph-valued
//! attribute fields (`g`, `graphs`), which are the only way a graph nests (If, Loop, Scan),
//! so decoding never recurses deeper than the fixed schema below; and the model's local
//! functions (a node using one has a custom domain, which is refused).
//!
//! Two deviations, both stricter than protobuf: the packed varint arrays of a tensor
//! (`int32_data`, `int64_data`) are kept as the bytes they are on the wire and decoded by
//! [`varints`] up to the tensor's declared size, which for integers (shapes, axes) is small,
//! so a hostile file cannot turn each byte into an 8-byte integer; onnx.proto declares them
//! `[packed = true]`, which every writer honours. And before `prost` decodes anything, [`census`] walks the wire format along the
//! same schema and bounds what decoding will allocate.

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Only counted: sparse initializers are refused.
    #[prost(bytes = "vec", repeated, tag = "15")]
    pub sparse_initializer: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(string, tag = "7")]
    pub domain: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

/// `AttributeProto.AttributeType` values the importer reads.
pub mod attr_type {
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// A reference to an attribute of an enclosing function: refused.
    #[prost(string, tag = "21")]
    pub ref_attr_name: String,
}

/// `TensorProto.DataType` values the importer reads.
pub mod data_type {
    pub const FLOAT: i32 = 1;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const DOUBLE: i32 = 11;
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Only counted: a segment of a tensor split across messages is refused.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub segment: Option<Vec<u8>>,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// Packed varints, as on the wire ([`varints`]).
    #[prost(bytes = "vec", tag = "5")]
    pub int32_data: Vec<u8>,
    /// Packed varints, as on the wire ([`varints`]).
    #[prost(bytes = "vec", tag = "7")]
    pub int64_data: Vec<u8>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// Where external data would be: refused when present.
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// Of the `value` oneof, only `tensor_type`: a sequence, map or optional input is refused
/// as "not a tensor".
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeTensor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeTensor {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// One dimension: a number, a named (dynamic) size, or neither (unknown).
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// The values of a packed varint array, as signed 64-bit integers (int32 values are written
/// sign-extended to 64 bits, so one decoder serves both); `None` when malformed or when
/// there are more than `limit`.
pub fn varints(mut bytes: &[u8], limit: usize) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(limit.min(bytes.len()));
    while !bytes.is_empty() {
        if out.len() == limit {
            return None;
        }
        out.push(varint(&mut bytes)? as i64);
    }
    Some(out)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// What decoding a field costs, by the field's declaration above.
#[derive(Clone, Copy)]
enum Field {
    /// A message of this kind: its struct, then its own fields.
    Msg(Kind),
    /// A string or bytes value: a vector header and its bytes.
    Bytes,
    /// A repeated number: packed, up to `n` bytes per wire byte (8 for a varint, 1 for a
    /// fixed-width float or double); unpacked, one element.
    Numbers(usize),
    /// A single number, inside its struct.
    Scalar,
    /// Not declared: skipped by `prost`, nothing allocated.
    Skipped,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Model,
    Opset,
    Entry,
    Graph,
    Node,
    Attribute,
    Tensor,
    ValueInfo,
    Type,
    TypeTensor,
    Shape,
    Dim,
}

/// The schema above, field by field.
fn field(kind: Kind, number: u64) -> Field {
    use Field::*;
    use Kind::*;
    match (kind, number) {
        (Model, 1) => Scalar,
        (Model, 8) => Msg(Opset),
        (Model, 2) => Bytes,
        (Model, 7) => Msg(Graph),
        (Model, 14) => Msg(Entry),
        (Opset, 1) | (Entry, 1) | (Entry, 2) => Bytes,
        (Opset, 2) => Scalar,
        (Graph, 1) => Msg(Node),
        (Graph, 2) | (Graph, 15) => Bytes,
        (Graph, 5) => Msg(Tensor),
        (Graph, 11) | (Graph, 12) => Msg(ValueInfo),
        (Node, 1..=4) | (Node, 7) => Bytes,
        (Node, 5) => Msg(Attribute),
        (Attribute, 1) | (Attribute, 4) | (Attribute, 21) => Bytes,
        (Attribute, 20) | (Attribute, 2) | (Attribute, 3) => Scalar,
        (Attribute, 5) => Msg(Tensor),
        (Attribute, 7) => Numbers(1),
        (Attribute, 8) => Numbers(8),
        (Tensor, 1) => Numbers(8),
        (Tensor, 2) | (Tensor, 14) => Scalar,
        (Tensor, 3) | (Tensor, 5) | (Tensor, 7) | (Tensor, 8) | (Tensor, 9) => Bytes,
        (Tensor, 4) | (Tensor, 10) => Numbers(1),
        (Tensor, 13) => Msg(Entry),
        (ValueInfo, 1) => Bytes,
        (ValueInfo, 2) => Msg(Type),
        (Type, 1) => Msg(TypeTensor),
        (TypeTensor, 1) => Scalar,
        (TypeTensor, 2) => Msg(Shape),
        (Shape, 1) => Msg(Dim),
        (Dim, 1) => Scalar,
        (Dim, 2) => Bytes,
        _ => Skipped,
    }
}

/// Bytes charged for one decoded message and for one string or number in a vector: three
/// times the largest struct above (an AttributeProto with its inline TensorProto, about
/// 360 B) and three times a `String`, since a vector grown by pushes holds up to twice its
/// length, and the old buffer while it moves.
const MESSAGE_COST: u64 = 1200;
const ELEMENT_COST: u64 = 72;

/// Walks the wire format of a `ModelProto` along the schema above and returns an upper bound
/// of the bytes that decoding it allocates, or what is malformed. Nothing is allocated;
/// the recursion follows the schema, whose deepest path is six messages.
pub fn census(bytes: &[u8]) -> Result<u64, String> {
    walk(bytes, Kind::Model)
}

fn walk(mut buf: &[u8], kind: Kind) -> Result<u64, String> {
    let mut cost = 0u64;
    while !buf.is_empty() {
        let key = varint(&mut buf).ok_or("truncated field key")?;
        let (number, wire) = (key >> 3, key & 7);
        let f = field(kind, number);
        match wire {
            0 => {
                varint(&mut buf).ok_or("truncated varint")?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if buf.len() < n {
                    return Err("truncated fixed-width field".into());
                }
                buf = &buf[n..];
            }
            2 => {
                let len = varint(&mut buf).ok_or("truncated length")?;
                if len > buf.len() as u64 {
                    return Err(format!("a field of {len} bytes where {} remain", buf.len()));
                }
                let (body, rest) = buf.split_at(len as usize);
                buf = rest;
                cost += match f {
                    Field::Msg(k) => MESSAGE_COST + walk(body, k)?,
                    Field::Bytes => ELEMENT_COST + len,
                    Field::Numbers(n) => 3 * len * n as u64,
                    Field::Scalar | Field::Skipped => 0,
                };
                continue;
            }
            _ => return Err(format!("wire type {wire} (groups are not used by ONNX)")),
        }
        if let Field::Numbers(_) = f {
            cost += 24;
        }
    }
    // A message is charged once more per field kind it holds; a constant covers that.
    Ok(cost + ELEMENT_COST)
}

/// Decodes a model after its census.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, String> {
    ModelProto::decode(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_packed_int64_as_prost_encodes_them() {
        let t = TensorProto {
            int64_data: vec![],
            ..Default::default()
        };
        assert!(varints(&t.int64_data, 0).unwrap().is_empty());
        // What a writer puts in int64_data: the packed encoding of [1, -2, 300].
        let mut packed = Vec::new();
        for v in [1i64, -2, 300] {
            prost::encoding::encode_varint(v as u64, &mut packed);
        }
        assert_eq!(varints(&packed, 3).unwrap(), vec![1, -2, 300]);
        assert_eq!(varints(&packed, 2), None);
        assert_eq!(varints(&[0x80], 1), None);
    }

    #[test]
    fn census_charges_empty_nodes_as_messages() {
        // 1000 empty nodes: 2 bytes each on the wire, one struct each when decoded.
        let g = GraphProto {
            node: vec![NodeProto::default(); 1000],
            ..Default::default()
        };
        let m = ModelProto {
            graph: Some(g),
            ..Default::default()
        };
        let bytes = m.encode_to_vec();
        let cost = census(&bytes).unwrap();
        assert!(bytes.len() < 3000, "{}", bytes.len());
        assert!(cost >= 1000 * MESSAGE_COST, "{cost}");
        assert_eq!(decode(&bytes).unwrap(), m);
    }

    #[test]
    fn census_refuses_truncated_and_group_fields() {
        let m = ModelProto {
            producer_name: "x".repeat(20),
            ..Default::default()
        };
        let bytes = m.encode_to_vec();
        assert!(census(&bytes[..bytes.len() - 1]).is_err());
        // Field 1, wire type 3 (start group).
        assert!(census(&[0x0b]).unwrap_err().contains("wire type 3"));
    }
}
