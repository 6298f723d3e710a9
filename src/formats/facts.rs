//! Each file kind's public facts (its header's entries), read into their types once, where
//! the file is opened: a malformed entry is refused there, naming the file, and the checks
//! above compare typed values instead of looking entries up by name.

use std::path::Path;

use super::bodies::{is_graph, JobParams, FIXED_POINT, GRAPH_DESCRIPTION, NAME};
use super::error::FormatError;
use super::header::Header;
use crate::corr::base_ots::BASE_OT;
use crate::corr::masks::{MASK_SEEDS, OPENED_MAC};
use crate::image::window::{DeclaredWindow, MODEL_WINDOW};
use crate::ring::sweep::{parse_ranges, Ranges, SIGMA_RANGE};
use crate::ring::tiles::Tile;
use crate::ring::Party;

/// Header entry of an image share's and a public job header's: the job's parameters (JSON).
pub const JOB: &str = "job";

/// The job parameters named by `h`, the header of the image share or public job header at
/// `path`, validated.
pub fn job_from_header(path: &Path, h: &Header) -> Result<JobParams, FormatError> {
    let s = h.info(JOB).ok_or_else(|| FormatError::Mismatch {
        path: path.into(),
        what: "header lacks the job parameters".into(),
    })?;
    let job: JobParams = serde_json::from_str(s)
        .map_err(|e| FormatError::Malformed(path.into(), "job parameters", e.to_string()))?;
    job.validate().map_err(|e| FormatError::Mismatch {
        path: path.into(),
        what: e,
    })?;
    Ok(job)
}

/// Header entry: the noise level a model was trained at, sigma* (0..255 scale).
pub const SIGMA: &str = "sigma";
/// Header entry: the engine the dealer made the correlations for (`gmw`, `gc`).
pub const ENGINE: &str = "engine";
/// Header entry: the dealer's circuit shapes (JSON), which the server recomputes.
pub const CIRCUIT: &str = "circuit";
/// Header entry: the tile (`I/K`) the randomness was sized for.
pub const TILE: &str = "tile";
/// Header entry: the model mask the matrix triples were made against.
pub const MODEL_MASK: &str = "model_mask";

/// What a triplet file's header says of the job it was dealt for.
#[derive(Clone, Debug, Default)]
pub struct TripletFacts {
    /// The engine's name, as the header gives it (the body names the engine too: the server
    /// checks that the two agree).
    pub engine: Option<String>,
    /// The dealer's circuit shapes.
    pub circuit: Option<String>,
    /// The tile it was dealt for, with its label as written.
    pub tile: Option<(Tile, String)>,
    /// The model mask it was made against (none: weights opened in the job).
    pub model_mask: Option<String>,
    /// Each party's base-OT digest, S0's then S1's.
    pub base_ots: Option<[String; 2]>,
    /// Each party's digest of its model mask's seed, S0's then S1's.
    pub mask_seeds: Option<[String; 2]>,
    /// Dealt for a CNN graph: its public description and fixed point, as the dealer read
    /// them from the model's public header.
    pub graph: Option<(Option<String>, Option<String>)>,
}

impl TripletFacts {
    /// The facts of `h`, the header of the triplet file at `path`.
    pub fn read(path: &Path, h: &Header) -> Result<TripletFacts, FormatError> {
        let owned = |key: &str| h.info(key).map(String::from);
        let pair = |key: &str, what: &'static str| -> Result<Option<[String; 2]>, FormatError> {
            h.info(key)
                .map(|named| match named.split(',').collect::<Vec<_>>()[..] {
                    [a, b] => Ok([a.to_string(), b.to_string()]),
                    _ => Err(FormatError::Malformed(
                        path.into(),
                        what,
                        format!("{named:?} (two digests, comma-separated)"),
                    )),
                })
                .transpose()
        };
        let tile = h
            .info(TILE)
            .map(|label| {
                Tile::parse(label)
                    .map(|t| (t, label.to_string()))
                    .map_err(|e| FormatError::Malformed(path.into(), "tile", e))
            })
            .transpose()?;
        Ok(TripletFacts {
            engine: owned(ENGINE),
            circuit: owned(CIRCUIT),
            tile,
            model_mask: owned(MODEL_MASK),
            base_ots: pair(BASE_OT, "base-OT digests")?,
            mask_seeds: pair(MASK_SEEDS, "mask seed digests")?,
            graph: is_graph(h).then(|| (owned(GRAPH_DESCRIPTION), owned(FIXED_POINT))),
        })
    }

    /// Party `p`'s base-OT digest.
    pub fn base_ot(&self, p: Party) -> Option<&str> {
        self.base_ots.as_ref().map(|d| d[p.index()].as_str())
    }

    /// Party `p`'s digest of its model mask's seed.
    pub fn mask_seed(&self, p: Party) -> Option<&str> {
        self.mask_seeds.as_ref().map(|d| d[p.index()].as_str())
    }
}

/// Header entry of a tile's output share: the image rows its canvas holds (a whole-image
/// job's tile).
pub const ROWS: &str = "rows";
/// Header entry of a tile's output share: the run of the patch grid it holds (an MLP's).
pub const PATCHES: &str = "patches";

/// What an output share's header says of its run, as its server wrote it (the receiver
/// trusts none of it alone: it compares the two servers' and checks each against the body).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputFacts {
    /// The model's name, copied from the model share.
    pub name: Option<String>,
    /// The network family (`graph`; none for an MLP).
    pub network: Option<String>,
    /// A tile's label (`I/K`), as written.
    pub tile: Option<String>,
    /// A tile's range, as written: its image rows (a whole-image job) or patches (an MLP).
    pub rows: Option<String>,
    pub patches: Option<String>,
}

impl OutputFacts {
    /// The facts of an output share's header `h`.
    pub fn of(h: &Header) -> OutputFacts {
        let owned = |key: &str| h.info(key).map(String::from);
        OutputFacts {
            name: owned(NAME),
            network: owned(super::header::NETWORK),
            tile: owned(TILE),
            rows: owned(ROWS),
            patches: owned(PATCHES),
        }
    }

    /// The tile it is the output of, parsed (none: a job in one piece).
    pub fn parsed_tile(&self) -> Option<Result<Tile, String>> {
        self.tile.as_deref().map(Tile::parse)
    }

    /// The range its tile holds: image rows for a whole-image job, else patches.
    pub fn tile_range(&self, whole_image: bool) -> Option<std::ops::Range<usize>> {
        let named = if whole_image {
            &self.rows
        } else {
            &self.patches
        };
        named.as_deref().and_then(crate::ring::tiles::parse_range)
    }
}

/// What a model's public header (or its shares' headers) says of it, in the clear.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelFacts {
    /// The name its owner gave it.
    pub name: Option<String>,
    /// The noise level it was trained at, sigma* (0..255 scale), where the header gives a
    /// positive one.
    pub sigma: Option<f64>,
    /// The noise levels its owner's sweep found its fixed point holds for, per span of
    /// values, where recorded.
    pub sigma_range: Option<Ranges>,
    /// The window of image values it was trained on, where its owner declared one.
    pub window: Option<DeclaredWindow>,
    /// A CNN graph's public description and fixed point, as written.
    pub graph_description: Option<String>,
    pub fixed_point: Option<String>,
}

impl ModelFacts {
    /// The facts of `h`, the header of the model file at `path`: a malformed noise range
    /// or window is refused here, naming the file.
    pub fn read(path: &Path, h: &Header) -> Result<ModelFacts, FormatError> {
        let owned = |key: &str| h.info(key).map(String::from);
        let sigma_range = h
            .info(SIGMA_RANGE)
            .map(|r| {
                parse_ranges(r).ok_or_else(|| {
                    FormatError::Malformed(path.into(), SIGMA_RANGE, format!("{r:?}"))
                })
            })
            .transpose()?;
        let window = h
            .info(MODEL_WINDOW)
            .map(|v| {
                v.parse::<DeclaredWindow>()
                    .map_err(|e| FormatError::Malformed(path.into(), "window", e.to_string()))
            })
            .transpose()?;
        Ok(ModelFacts {
            name: owned(NAME),
            sigma: h
                .info(SIGMA)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0),
            sigma_range,
            window,
            graph_description: owned(GRAPH_DESCRIPTION),
            fixed_point: owned(FIXED_POINT),
        })
    }
}

/// The check value an opened-weights file's header gives its masked weights (`open-weights`
/// writes it under the server's mask seed): none in files of an older `open-weights`.
pub fn opened_mac(path: &Path, h: &Header) -> Result<Option<blake3::Hash>, FormatError> {
    h.info(OPENED_MAC)
        .map(|named| {
            blake3::Hash::from_hex(named)
                .map_err(|_| FormatError::Malformed(path.into(), OPENED_MAC, format!("{named:?}")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::header::Kind;

    fn header(kind: Kind, entries: &[(&str, &str)]) -> Header {
        let mut h = Header::new(kind, Party::S0, 16);
        h.info
            .extend(entries.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        h
    }

    #[test]
    fn a_triplet_header_is_read_into_its_facts_and_a_malformed_entry_refused_by_name() {
        let p = Path::new("t.p0");
        let h = header(
            Kind::Triplets,
            &[
                (ENGINE, "gmw"),
                (TILE, "1/3"),
                (BASE_OT, "aa,bb"),
                (MASK_SEEDS, "cc,dd"),
            ],
        );
        let f = TripletFacts::read(p, &h).unwrap();
        assert_eq!(f.engine.as_deref(), Some("gmw"));
        assert_eq!(f.tile, Some((Tile::new(1, 3).unwrap(), "1/3".into())));
        assert_eq!(
            (f.base_ot(Party::S0), f.base_ot(Party::S1)),
            (Some("aa"), Some("bb"))
        );
        assert_eq!(f.mask_seed(Party::S1), Some("dd"));
        assert!(f.graph.is_none() && f.model_mask.is_none());
        for (key, bad) in [(BASE_OT, "aa"), (MASK_SEEDS, "a,b,c"), (TILE, "3/3")] {
            let e = TripletFacts::read(p, &header(Kind::Triplets, &[(key, bad)]))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("t.p0: malformed"), "{key}: {e}");
        }
    }

    #[test]
    fn a_model_header_gives_its_sigma_range_and_window_typed_or_is_refused() {
        let p = Path::new("m.pub");
        let h = header(
            Kind::PublicModel,
            &[
                (NAME, "dncnn"),
                (SIGMA, "25"),
                (SIGMA_RANGE, "255=1:40"),
                (MODEL_WINDOW, "-160:240 HU"),
            ],
        );
        let f = ModelFacts::read(p, &h).unwrap();
        assert_eq!((f.name.as_deref(), f.sigma), (Some("dncnn"), Some(25.0)));
        assert_eq!(f.sigma_range, Some(vec![(255.0, Some((1.0, 40.0)))]));
        assert!(f.window.is_some());
        // A sigma that is not a positive level is no sigma.
        let f = ModelFacts::read(p, &header(Kind::PublicModel, &[(SIGMA, "-3")])).unwrap();
        assert_eq!(f.sigma, None);
        for (key, bad) in [(SIGMA_RANGE, "wide"), (MODEL_WINDOW, "240:-160 HU")] {
            let e = ModelFacts::read(p, &header(Kind::PublicModel, &[(key, bad)]))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("m.pub: malformed"), "{key}: {e}");
        }
    }

    #[test]
    fn an_output_headers_tile_range_is_its_rows_or_its_patches() {
        let h = header(Kind::OutputShare, &[(TILE, "0/2"), (ROWS, "0..17")]);
        let f = OutputFacts::of(&h);
        assert_eq!(f.parsed_tile(), Some(Ok(Tile::new(0, 2).unwrap())));
        assert_eq!(f.tile_range(true), Some(0..17));
        assert_eq!(f.tile_range(false), None);
        assert_eq!(
            OutputFacts::of(&header(Kind::OutputShare, &[])).parsed_tile(),
            None
        );
    }
}
