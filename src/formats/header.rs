//! What every ppdenoise file says about itself, in the clear: the format version, its kind,
//! party, ids, shapes and public facts ([`Header`]). It sits below the container, the sealing
//! and the signing, which all read it.

use crate::ring::Party;
use serde::{Deserialize, Serialize};

/// 2: patch shapes carry the aggregation window (model shares, output shares).
/// 3: triplet files name their engine (GC or boolean).
/// 4: model masks (weights opened once per model) and the dealer's header-only files: five
///    new kinds, and triplet files made against a model mask name it; version 3 files remain
///    readable (they have none of these).
/// 5: CNN model shares (a new kind; the CNN's public facts are in header `info`: network,
///    kernels, fixed point); older files remain readable.
/// 6: CNN plans carry their frame (FFDNet's sub-images and noise map): a CNN model share's
///    body changed, so those of version 5 are refused (share the model again); every other
///    kind of version 3 to 5 remains readable.
/// 7: MLP plans name their hidden activation (tanh* or ReLU): an MLP model share's body
///    changed, so those of versions 3 to 6 are refused (share the model again); headers
///    without the new `relu` entry name tanh* as before, so every other kind stays readable.
/// 8: files may be signed by their maker (header entries `signer`, `signer_role`, and a
///    signature after the checksum, [`signing`]); triplet files carry their base OTs'
///    digests (`base_ot`). Unsigned files of versions 3 to 7 remain readable.
/// 9: a job names its colour planes (`JobParams::colours`, issue 48): the bodies holding a
///    job (image shares, triplets, output shares) changed, so those of versions 3 to 8 are
///    refused by name (share the image again); every other kind stays readable, and a
///    public job header's JSON without the count is gray. CNN graph model shares (a new
///    kind; the graph's public description and fixed point in header `info`, docs/graph.md).
/// 10: seeded streams are AES-256-CTR under keys derived per stream ([`crate::ring::share`]),
///    where they were ChaCha20: every kind holding values drawn from a seed (model, image
///    and mask shares, opened weights, triplets) of versions 3 to 9 is refused by name, its
///    values no longer what its seeds give; output shares and the public and receiver's
///    files stay readable. And party 1's triplet body holds its explicit values packed at
///    the widths their readers need (`corr::pack::Packed`: bit count, byte count, bytes;
///    issue 51), where version 9 held a count and 64-bit values.
/// 11: a chain CNN (DnCNN, FFDNet) is shared, dealt and served as a CNN graph, its noise map
///    a graph input (docs/graph.md): the chain CNN's own files (model shares, public model
///    and job headers, image shares and triplets naming network "cnn") of any version are
///    refused by name, output shares aside; a build before 11 refuses a graph share of
///    FFDNet by version, not by a parse error deep in its description.
pub const VERSION: u16 = 11;
/// Oldest version this build reads.
pub const MIN_VERSION: u16 = 3;
pub type Id = [u8; 16];

pub fn fresh_id() -> Id {
    use rand::RngCore;
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    id
}

pub fn id_hex(id: &Id) -> String {
    hex::encode(id)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    ModelShare,
    ImageShare,
    Triplets,
    OutputShare,
    /// A server's share of a model's weight mask (dealer, once per model).
    ModelMask,
    /// The dealer's own record of a model's weight mask (both servers' seeds).
    DealerMask,
    /// A server's opened masked weights U = W - A and its mask share (`open-weights`).
    OpenedWeights,
    /// A model's public header alone, for the dealer (`share-model`'s `<out>.pub`).
    PublicModel,
    /// A job's public header alone, for the dealer (`share-image`'s `<out>.pub`).
    PublicJob,
    /// A server's share of a chain CNN, as builds before format version 11 wrote it: kept
    /// in its place so that later kinds keep their numbers; such a file is refused by
    /// name (a chain CNN is shared as a graph: [`Kind::GraphModelShare`]).
    RetiredCnnModelShare,
    /// The gateway's signed statement of a study's slices (`share-study`): which job each
    /// slice is, in order, and the receiver's facts of it; the receiver's file alone.
    StudyBinding,
    /// The gateway's signed copy of a job's receiver's facts (`share-image`'s
    /// `<out>.rx.json.sig`): its window, units, noise scaling and level; the receiver's alone.
    ReceiverFacts,
    /// A server's share of a CNN graph's secret values (`share-model` given a graph).
    GraphModelShare,
    /// An RGBA image's alpha samples, signed by the gateway (`share-image`'s `<out>.alpha`):
    /// the receiver's alone, never a server's (a new kind within version 9: no older body
    /// changed).
    ReceiverAlpha,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::ModelShare => "model share",
            Kind::ImageShare => "image share",
            Kind::Triplets => "correlated randomness (triplets)",
            Kind::OutputShare => "output share",
            Kind::ModelMask => "model mask share",
            Kind::DealerMask => "dealer's model mask record",
            Kind::OpenedWeights => "opened weights",
            Kind::PublicModel => "public model header",
            Kind::PublicJob => "public job header",
            Kind::RetiredCnnModelShare => "CNN model share",
            Kind::StudyBinding => "study binding",
            Kind::ReceiverFacts => "receiver facts",
            Kind::GraphModelShare => "CNN graph model share",
            Kind::ReceiverAlpha => "receiver's alpha",
        }
    }
}

/// Public metadata of a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub kind: Kind,
    /// 0 or 1, a `u8` on disk; [`crate::ring::Party::try_from`] where it is used as a party.
    pub party: u8,
    pub ring_bits: u8,
    /// Fixed-point fractional bits of the values inside.
    pub scale: u32,
    pub model_id: Option<Id>,
    pub job_id: Option<Id>,
    pub triplet_id: Option<Id>,
    /// Named shapes, e.g. ("image", [512, 512]) or ("layers", [1521, 512, 512, 289]).
    pub shapes: Vec<(String, Vec<u64>)>,
    /// Free-form public facts (tool version, stride, sigma, ...).
    pub info: Vec<(String, String)>,
}

impl Header {
    pub fn new(kind: Kind, party: Party, scale: u32) -> Header {
        Header {
            kind,
            party: party.into(),
            ring_bits: 64,
            scale,
            model_id: None,
            job_id: None,
            triplet_id: None,
            shapes: Vec::new(),
            info: vec![(
                "tool".into(),
                format!("ppdenoise {}", env!("CARGO_PKG_VERSION")),
            )],
        }
    }

    pub fn shape(&self, name: &str) -> Option<&[u64]> {
        self.shapes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn info(&self, name: &str) -> Option<&str> {
        self.info
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A JSON view for `inspect`.
    pub fn to_json(&self) -> serde_json::Value {
        let hexid = |i: &Option<Id>| i.as_ref().map(id_hex);
        serde_json::json!({
            "kind": format!("{:?}", self.kind),
            "party": self.party,
            "ring_bits": self.ring_bits,
            "scale": self.scale,
            "model_id": hexid(&self.model_id),
            "job_id": hexid(&self.job_id),
            "triplet_id": hexid(&self.triplet_id),
            "shapes": self.shapes.iter().map(|(n, v)| (n.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "info": self.info.iter().map(|(n, v)| (n.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Header `info` key naming a file's network family; absent for MLP files.
pub const NETWORK: &str = "network";
/// Its value for the files of a chain CNN's job (model shares, public headers, image shares,
/// triplets, outputs) made by builds before format version 11, which ran chain CNNs apart
/// from graphs: refused when opened, output shares aside (`container`'s `chain_cnn_refusal`).
pub const CNN: &str = "cnn";
