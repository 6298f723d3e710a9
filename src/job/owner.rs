//! The model owner's step for a CNN graph (`share-model` given one; docs/graph.md,
//! milestone 5): the graph's public description and fixed point go in every header, its
//! secret values are split. The window entries are also the MLP's and CNN's (`cli/owner.rs`).

use crate::ring::Party;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{public_file, with_ext, Outputs, Summary};
use crate::fileio::atomic::Staged;
use crate::formats::bodies::{
    GraphModelShare, FIXED_POINT, GRAPH, GRAPH_DESCRIPTION, NAME, NETWORK,
};
use crate::formats::checks::{fixed_point_entry, graph_plan_from_header};
use crate::formats::container::{self, fresh_id, id_hex, Header, Kind};
use crate::image::window::{DeclaredWindow, MODEL_WINDOW};
use crate::model::graph::Graph;
use crate::ring::cnn::CnnFixed;
use crate::ring::graph::GraphPlan;
use crate::ring::share::fresh_seed;

/// The public header's entry for a window the model file declares (none when it declares
/// none): the gateway maps images with it.
pub fn window_entry(d: Option<&DeclaredWindow>) -> Option<(String, String)> {
    d.map(|d| (MODEL_WINDOW.into(), d.to_string()))
}

pub fn window_line(d: Option<&DeclaredWindow>) -> Option<String> {
    d.map(|d| {
        format!(
            "declared window: {d} (the model file's; share-image and share-study map images \
             with it, and refuse another --window)"
        )
    })
}

/// What the owner measured of the noise levels a model's fixed point holds for: the public
/// header's entries (the gateway checks an image's level against them), a line for the
/// summary and the summary's JSON entries.
pub struct NoiseFacts {
    pub entries: Vec<(String, String)>,
    pub line: String,
    pub json: Vec<(&'static str, serde_json::Value)>,
}

impl NoiseFacts {
    /// A graph read from ONNX: its fixed point is not swept.
    pub fn not_swept() -> NoiseFacts {
        NoiseFacts {
            entries: Vec::new(),
            line: "noise levels: a graph's fixed point is not swept; `denoise --arith fixed` \
                   gives its distance to float and its error bound"
                .into(),
            json: Vec::new(),
        }
    }
}

/// Shares graph `g` (read from `path`, named `name`) at fixed point `params` into `out`'s
/// `.p0`, `.p1` and `.pub`, written together or not at all, with what `noise` measures of
/// the levels its fixed point holds for on the graph's plan (run once that plan is known to
/// be buildable: an owner's sweep takes tens of seconds).
pub fn share_graph_model(
    out: &Path,
    path: &Path,
    name: String,
    g: Graph,
    params: CnnFixed,
    to: &Outputs,
    noise: impl FnOnce(&GraphPlan) -> Result<NoiseFacts>,
) -> Result<Summary> {
    g.validate(path)?;
    let plan = GraphPlan::from_graph(&g, params).map_err(|e| {
        anyhow::anyhow!("{}: cannot build the fixed-point plan: {e}", path.display())
    })?;
    plan.check_streams()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let noise = noise(&plan)?;
    let public = serde_json::to_string(&g.public()).expect("a graph serialises");
    let model_id = fresh_id();
    let header = |kind: Kind, party: Party| {
        let mut h = Header::new(kind, party, params.s);
        h.model_id = Some(model_id);
        h.info.push((NETWORK.into(), GRAPH.into()));
        h.info.push((NAME.into(), name.clone()));
        h.info
            .push((crate::formats::facts::SIGMA.into(), g.sigma.to_string()));
        h.info.push((GRAPH_DESCRIPTION.into(), public.clone()));
        h.info.push((FIXED_POINT.into(), fixed_point_entry(params)));
        h.info.extend(noise.entries.clone());
        h.info.extend(window_entry(g.window.as_ref()));
        h
    };
    // What every party will rebuild from these headers must be this plan, secret values
    // aside: checked here, before anything is written.
    let (_, rebuilt) = graph_plan_from_header(path, &header(Kind::PublicModel, Party::S0))?;
    if rebuilt != plan.public() {
        bail!(
            "{}: the plan rebuilt from the public description differs from the model's (a bug: \
             please report it)",
            path.display()
        );
    }
    let bodies = GraphModelShare::split(&plan, &fresh_seed());
    let mut written = Vec::new();
    let mut set = Staged::default();
    for (party, body) in Party::BOTH.into_iter().zip(&bodies) {
        let out = with_ext(out, party);
        container::stage(
            &mut set,
            &out,
            &header(Kind::GraphModelShare, party),
            body,
            to.party(party),
        )
        .with_context(|| format!("writing {}", out.display()))?;
        written.push(out.display().to_string());
    }
    let out = public_file(out);
    container::stage(
        &mut set,
        &out,
        &header(Kind::PublicModel, Party::S0),
        &(),
        to.public(),
    )
    .with_context(|| format!("writing {}", out.display()))?;
    written.push(out.display().to_string());
    set.commit()?;
    let ops = g.nodes.len() - 1;
    let mut json = serde_json::json!({
        "ok": true, "command": "share-model", "model": path, "model_id": id_hex(&model_id),
        "network": GRAPH, "ops": ops, "truncations": plan.truncations(),
        "colours": g.colours, "noise_map": g.noise_map().is_some(),
        "fixed_point": [params.s, params.ws, params.k], "outputs": written,
        "window": g.window.map(|d| d.to_string()),
    });
    for (k, v) in noise.json {
        json[k] = v;
    }
    Ok(Summary {
        lines: vec![
            format!(
                "CNN graph {} ({ops} ops, {} rescalings placed, fixed point s {} ws {} k {}) shared as {} and {} (public header for the dealer: {}); model id {}",
                path.display(),
                plan.truncations(),
                params.s,
                params.ws,
                params.k,
                written[0],
                written[1],
                written[2],
                id_hex(&model_id)
            ),
            noise.line,
        ]
        .into_iter()
        .chain(window_line(g.window.as_ref()))
        .collect(),
        json,
    })
}
