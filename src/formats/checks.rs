//! Checks of the public fields a file's header carries, shared by the dealer, the servers and
//! `open-weights`: each names the file and the field it refuses.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::circuit::activation::ActConsts;
use crate::circuit::activation::{ActCircuit, TruncParams};
use crate::formats::bodies::{JobParams, FIXED_POINT, GRAPH_DESCRIPTION};
use crate::formats::container::{id_hex, Header};
use crate::formats::facts::SIGMA;
use crate::ring::plan::{Hidden, Plan};

/// The public activation constants a model share's header carries (one per hidden layer).
pub fn acts_from_header(path: &Path, h: &Header, layers: usize) -> Result<Vec<ActConsts>> {
    let s = h.info("acts").with_context(|| {
        format!(
            "{}: header lacks the activation constants (a model share from an older version?)",
            path.display()
        )
    })?;
    let acts: Vec<ActConsts> = serde_json::from_str(s)
        .with_context(|| format!("{}: malformed activation constants", path.display()))?;
    if acts.len() + 2 != layers {
        bail!(
            "{}: {} activation constants for {} hidden layers",
            path.display(),
            acts.len(),
            layers.saturating_sub(2)
        );
    }
    for (l, c) in acts.iter().enumerate() {
        ActCircuit::tanh_star(c)
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: hidden layer {l}: {e}", path.display()))?;
    }
    Ok(acts)
}

/// The header entries that name a plan's hidden-layer circuits: `acts` (tanh* constants) or
/// `relu` (the ReLU circuit's truncation). Public: the dealer sizes the boolean engine's
/// correlations from them.
pub fn circuit_entries(plan: &Plan) -> Vec<(String, String)> {
    let json = match plan.hidden {
        Hidden::TanhStar => ("acts", serde_json::to_string(&plan.acts)),
        Hidden::Relu => ("relu", serde_json::to_string(&plan.params.relu_trunc())),
    };
    vec![(json.0.into(), json.1.expect("constants serialise"))]
}

/// The entries of [`circuit_entries`] a header carries, copied (the dealer's triplet header
/// repeats its model's).
pub fn copy_circuit_entries(from: &Header) -> Vec<(String, String)> {
    ["acts", "relu"]
        .into_iter()
        .filter_map(|k| from.info(k).map(|v| (k.to_string(), v.to_string())))
        .collect()
}

/// The hidden layers' circuits a header names (see [`circuit_entries`]), checked.
pub fn circuits_from_header(path: &Path, h: &Header, layers: usize) -> Result<Vec<ActCircuit>> {
    let Some(s) = h.info("relu") else {
        let acts = acts_from_header(path, h, layers)?;
        return Ok(acts.iter().map(ActCircuit::tanh_star).collect());
    };
    if h.info("acts").is_some() {
        bail!(
            "{}: header names both tanh* constants and a ReLU circuit",
            path.display()
        );
    }
    let t: TruncParams = serde_json::from_str(s)
        .with_context(|| format!("{}: malformed ReLU circuit parameters", path.display()))?;
    let c = ActCircuit::Relu(t);
    c.validate()
        .map_err(|e| anyhow::anyhow!("{}: ReLU circuit: {e}", path.display()))?;
    Ok(vec![c; layers.saturating_sub(2)])
}

/// Whether a triplet file's `facts` say it was dealt for the CNN graph whose model header is
/// `mh`: the same public description and fixed point.
pub fn dealt_for_graph(facts: &crate::formats::facts::TripletFacts, mh: &Header) -> bool {
    let named = |key: &str| mh.info(key).map(String::from);
    matches!(&facts.graph, Some((d, fp)) if d.is_some() && fp.is_some()
        && *d == named(GRAPH_DESCRIPTION) && *fp == named(FIXED_POINT))
}

/// A CNN job's ReLU run size: 1 to 2^28 elements (one message of the engine's).
pub fn check_relu_batch(batch: usize) -> Result<()> {
    if batch == 0 || batch > 1 << 28 {
        bail!("a CNN's ReLU batch of {batch} elements (1 to 2^28 supported)");
    }
    Ok(())
}

/// The image must have been shared for this CNN graph, on the whole image (stride 1): the
/// noise level it was scaled to is the model's sigma*, or the receiver would decode with
/// another scaling.
pub fn check_whole_image_job(image: &Path, job: &JobParams, mh: &Header) -> Result<()> {
    let sigma = mh.info(SIGMA).and_then(|v| v.parse::<f64>().ok());
    if sigma != Some(job.model_sigma) || job.stride != 1 {
        bail!(
            "{}: the image was shared for a model of sigma {} (stride {}), not for this CNN (sigma {}): share it with `share-image --model model.pub`",
            image.display(),
            job.model_sigma,
            job.stride,
            sigma.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
        );
    }
    Ok(())
}

/// The image share `path` (header `ih`) carries a noise map exactly when the model `takes`
/// one: S1's share is a seed, which would expand to any length, so the header must say.
pub fn check_noise_map(path: &Path, ih: &Header, takes: bool) -> Result<()> {
    let has = ih.info(crate::formats::bodies::NOISE_MAP) == Some("shared");
    match (takes, has) {
        (true, false) => bail!(
            "{}: shared without a noise map, but this model takes one (FFDNet): share the image with `share-image --model model.pub`",
            path.display()
        ),
        (false, true) => bail!(
            "{}: shared with a noise map for a model that takes one, but this model does not",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// The image share `path` holds as many colour planes as the model `takes` (a colour model
/// given a gray image, or a gray one a colour image, is refused by name).
pub fn check_colours(path: &Path, job: &JobParams, takes: usize) -> Result<()> {
    let has = job.colours;
    if has != takes {
        let words = |c: usize| {
            if c == 1 {
                "gray".to_string()
            } else {
                format!("colour ({c} planes)")
            }
        };
        bail!(
            "{}: a {} image, but this model takes {} images: share it for this model with \
             `share-image --model model.pub`",
            path.display(),
            words(has),
            words(takes)
        );
    }
    Ok(())
}

/// The mask id a model mask file, record or opened weights file names.
pub fn mask_id_of(path: &Path, h: &Header) -> Result<String> {
    match h.info("model_mask") {
        // Lowercase only: the consumed record is keyed by the exact string.
        Some(id)
            if id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(id.into())
        }
        Some(id) => bail!("{}: malformed model mask id {id:?}", path.display()),
        None => bail!("{}: header lacks the model mask id", path.display()),
    }
}

/// Checks that a model mask file, record or opened weights file `path` belongs to the model
/// of `model` (header `mh`) and has its layer widths.
pub fn check_same_model(path: &Path, h: &Header, model: &Path, mh: &Header) -> Result<()> {
    if h.model_id.is_none() || h.model_id != mh.model_id {
        bail!(
            "{}: made for model {} but {} is model {}",
            path.display(),
            h.model_id.as_ref().map(id_hex).unwrap_or_default(),
            model.display(),
            mh.model_id.as_ref().map(id_hex).unwrap_or_default()
        );
    }
    if h.shape("layers") != mh.shape("layers") {
        bail!(
            "{}: made for layer widths {:?} but {} has {:?}",
            path.display(),
            h.shape("layers").unwrap_or_default(),
            model.display(),
            mh.shape("layers").unwrap_or_default()
        );
    }
    Ok(())
}

/// Reads a CNN graph's public description and fixed point from a header, checks the graph
/// whole (`PublicGraph::graph`: `Graph::validate`, convolution counts from their shapes) and
/// rebuilds its public plan: what every party sizes its work from. Returns the graph (its
/// shapes, strides and padding) and the plan, no secret value in either.
pub fn graph_plan_from_header(
    path: &Path,
    h: &Header,
) -> Result<(crate::model::graph::Graph, crate::ring::graph::GraphPlan)> {
    use crate::formats::bodies::{FIXED_POINT, GRAPH_DESCRIPTION};
    let s = h
        .info(GRAPH_DESCRIPTION)
        .with_context(|| format!("{}: header lacks the graph's description", path.display()))?;
    let public: crate::model::graph::public::PublicGraph = serde_json::from_str(s)
        .with_context(|| format!("{}: malformed graph description", path.display()))?;
    let g = public.graph(path)?;
    // One sigma*: the header's, which the gateway scales by and the servers check jobs
    // against, must be the description's.
    if h.info(SIGMA).and_then(|v| v.parse::<f64>().ok()) != Some(g.sigma) {
        bail!(
            "{}: header's sigma {:?} is not its graph description's ({})",
            path.display(),
            h.info("sigma"),
            g.sigma
        );
    }
    let fp = h
        .info(FIXED_POINT)
        .with_context(|| format!("{}: header lacks the graph's fixed point", path.display()))?;
    let v: Vec<u32> = fp
        .split(',')
        .map(|x| x.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|v: &Vec<u32>| v.len() == 3)
        .with_context(|| format!("{}: malformed fixed point {fp:?} (s,ws,k)", path.display()))?;
    let params = crate::ring::cnn::CnnFixed {
        s: v[0],
        ws: v[1],
        k: v[2],
    };
    if h.scale != params.s {
        bail!(
            "{}: header scale {} but the graph's fixed point takes {}",
            path.display(),
            h.scale,
            params.s
        );
    }
    let plan = crate::ring::graph::GraphPlan::from_graph(&g, params)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .public();
    plan.check_streams()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((g, plan))
}

/// A graph's fixed point as its headers write it ([`graph_plan_from_header`] reads it).
pub fn fixed_point_entry(p: crate::ring::cnn::CnnFixed) -> String {
    format!("{},{},{}", p.s, p.ws, p.k)
}
