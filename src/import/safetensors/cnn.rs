//! CNN denoisers as PyTorch saves them: the state dict of an `nn.Sequential` of `nn.Conv2d`
//! (same padding, stride 1), `nn.BatchNorm2d` directly after a convolution, and `nn.ReLU`
//! (no tensors), as `safetensors.torch.save_file` writes it. Batch norms are folded into
//! their convolutions here, before anything is shared. What the state dict does not say is
//! in the header's `__metadata__`: `sigma`, `residual` (the network predicts the noise:
//! clean = input - net(input), as DnCNN; required), `unshuffle` and `noise_map` (an
//! FFDNet: `nn.PixelUnshuffle(r)` before the stack with the noise map as the last input
//! channel, `nn.PixelShuffle(r)` after it, in PyTorch's channel order), `bn_eps` (the batch
//! norms' eps; required with batch norms), `fixed_point` ("s,ws,k", as a `.npz` records
//! them).

use std::collections::BTreeMap;
use std::path::Path;

use ::safetensors::SafeTensors;

use super::{not_st, read_checked, split_index, values};
use crate::image::window::MODEL_WINDOW;
use crate::model::cnn::{
    fold_batch_norm, reorder_channels, Cnn, CnnMeta, Conv, MAX_CHANNELS, MAX_KERNEL,
};
use crate::model::frame::{Frame, MAX_UNSHUFFLE};
use crate::model::mlp::ModelError;

const KEYS: [&str; 7] = [
    "sigma",
    "residual",
    "unshuffle",
    "noise_map",
    "bn_eps",
    "fixed_point",
    MODEL_WINDOW,
];

/// True when the file's header lists a 4-D tensor (a convolution kernel).
pub fn holds_conv(path: &Path) -> Result<bool, ModelError> {
    let bytes = read_checked(path)?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| not_st(path, e.to_string()))?;
    Ok(header.tensors().values().any(|t| t.shape.len() == 4))
}

/// One module of the Sequential, by index: its tensors by kind.
#[derive(Default)]
struct Module<'a> {
    tensors: BTreeMap<&'a str, &'a str>,
}

pub fn load(path: &Path) -> Result<Cnn, ModelError> {
    let bytes = read_checked(path)?;
    let (n, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| not_st(path, e.to_string()))?;
    let data = &bytes[8 + n..];
    let all = header.tensors();
    let terr = |name: &str, msg: String| ModelError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        msg,
    };
    let mut prefix: Option<&str> = None;
    let mut modules: BTreeMap<usize, Module> = BTreeMap::new();
    let mut names: Vec<&str> = all.keys().map(String::as_str).collect();
    names.sort_unstable();
    for &name in &names {
        let parsed = name.rsplit_once('.').and_then(|(stem, kind)| {
            let known = [
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked",
            ];
            known.contains(&kind).then_some(())?;
            split_index(stem).map(|(p, i)| (p, i, kind))
        });
        let Some((p, index, kind)) = parsed else {
            return Err(terr(
                name,
                "is not a Conv2d's or BatchNorm2d's tensor (expected <prefix><index>.weight, \
                 .bias, .running_mean, .running_var: the state dict of an nn.Sequential)"
                    .into(),
            ));
        };
        if *prefix.get_or_insert(p) != p {
            return Err(terr(
                name,
                "has another prefix than the file's other tensors".into(),
            ));
        }
        modules.entry(index).or_default().tensors.insert(kind, name);
    }
    let md = header.metadata().clone().unwrap_or_default();
    let setting = |key: &str, msg: String| ModelError::Setting {
        path: path.to_path_buf(),
        key: key.to_string(),
        msg,
    };
    for key in md.keys() {
        if !KEYS.contains(&key.as_str()) && key != "format" {
            return Err(setting(
                key,
                format!(
                    "is not a setting of a ppdenoise CNN (known: {})",
                    KEYS.join(", ")
                ),
            ));
        }
    }
    let number = |key: &str, default: f64| -> Result<f64, ModelError> {
        match md.get(key) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
                _ => Err(setting(
                    key,
                    format!("is {v:?}; expected a non-negative number"),
                )),
            },
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool, ModelError> {
        match md.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => Err(setting(key, format!("is {v:?}; expected true or false"))),
        }
    };
    // Whether the network predicts the noise is not in a state dict, and a wrong guess
    // gives a wrong image without an error: the file must say.
    if !md.contains_key("residual") {
        return Err(setting(
            "residual",
            "is missing: say whether the network predicts the noise (true: clean = input - \
             net(input), as DnCNN) or the image (false, as FFDNet)"
                .into(),
        ));
    }
    let meta = CnnMeta {
        sigma: number("sigma", 25.0)?,
        residual: flag("residual", true)?,
    };
    let r = number("unshuffle", 1.0)?;
    if !(r.fract() == 0.0 && (1.0..=MAX_UNSHUFFLE as f64).contains(&r)) {
        return Err(setting(
            "unshuffle",
            format!("is {r} (an integer 1 to {MAX_UNSHUFFLE} expected)"),
        ));
    }
    let frame = Frame {
        unshuffle: r as usize,
        noise_map: flag("noise_map", false)?,
    };
    // PyTorch's default eps is 1e-5, KAIR's DnCNN uses 1e-4: not guessed either.
    let has_bn = modules
        .values()
        .any(|m| m.tensors.contains_key("running_var"));
    if has_bn && !md.contains_key("bn_eps") {
        return Err(setting(
            "bn_eps",
            "is missing: the file has batch norms; give their eps (nn.BatchNorm2d's eps, \
             1e-5 unless set)"
                .into(),
        ));
    }
    let eps = number("bn_eps", 1e-5)?;

    let mut convs: Vec<Conv> = Vec::new();
    // Index of the last module read into the stack (a conv or its batch norm).
    let mut last: Option<usize> = None;
    for (&index, m) in &modules {
        let t = |kind: &str| m.tensors.get(kind).copied();
        let weight = t("weight").ok_or_else(|| {
            terr(
                m.tensors.values().next().expect("a tensor"),
                format!("module {index} has no weight"),
            )
        })?;
        let shape = &all[weight].shape;
        if t("running_mean").is_some() || t("running_var").is_some() {
            // A batch norm: right after the convolution before it.
            let conv = match (convs.last_mut(), last) {
                (Some(c), Some(l)) if l + 1 == index && shape.len() == 1 => c,
                _ => {
                    return Err(terr(
                        weight,
                        "belongs to a batch norm that does not directly follow a convolution"
                            .into(),
                    ))
                }
            };
            let mut p = Vec::new();
            for kind in ["weight", "bias", "running_mean", "running_var"] {
                let name =
                    t(kind).ok_or_else(|| terr(weight, format!("its batch norm has no {kind}")))?;
                let v = values(path, name, all[name], data)?;
                if v.len() != conv.cout {
                    return Err(terr(
                        name,
                        format!("has {} values for {} channels", v.len(), conv.cout),
                    ));
                }
                p.push(v);
            }
            fold_batch_norm(&mut conv.w, &mut conv.b, [&p[0], &p[1], &p[2], &p[3]], eps)
                .map_err(|e| terr(t("running_var").expect("read"), e))?;
            last = Some(index);
            continue;
        }
        let [cout, cin, kh, kw] = shape[..] else {
            return Err(terr(
                weight,
                format!("has shape {shape:?}: a Conv2d weight is 4-D (out x in x k x k)"),
            ));
        };
        if kh != kw || kh % 2 == 0 || kh > MAX_KERNEL {
            return Err(terr(
                weight,
                format!("has a {kh}x{kw} kernel (square, odd, up to {MAX_KERNEL})"),
            ));
        }
        if !(1..=MAX_CHANNELS).contains(&cin) || !(1..=MAX_CHANNELS).contains(&cout) {
            return Err(terr(
                weight,
                format!("maps {cin} to {cout} channels (1 to {MAX_CHANNELS} supported)"),
            ));
        }
        // nn.Sequential indices: the first convolution at 0, then exactly one module without
        // tensors (the ReLU) between a convolution (or its batch norm) and the next one. A
        // wider gap would be another parameterless module (a pooling, another activation)
        // that cannot be told from here.
        let expected = last.map_or(0, |l| l + 2);
        if index != expected {
            return Err(terr(
                weight,
                format!(
                    "is module {index} where {expected} was expected: the state dict must be \
                     an nn.Sequential of Conv2d, BatchNorm2d right after a Conv2d, and one ReLU \
                     between layers (module indices 0, 2, ... or with batch norms 0, 2, 3, 5, \
                     ...)"
                ),
            ));
        }
        let w = values(path, weight, all[weight], data)?;
        let b = match t("bias") {
            Some(name) => {
                let v = values(path, name, all[name], data)?;
                if all[name].shape != [cout] {
                    return Err(terr(
                        name,
                        format!("has shape {:?} for {cout} filters", all[name].shape),
                    ));
                }
                v
            }
            // Conv2d(bias=False), usual before a batch norm.
            None => vec![0.0; cout],
        };
        convs.push(Conv {
            cin,
            cout,
            k: kh,
            w,
            b,
        });
        last = Some(index);
    }
    if convs.is_empty() {
        return Err(ModelError::Invalid {
            path: path.to_path_buf(),
            msg: "holds no convolution".into(),
        });
    }
    // PyTorch's pixel-(un)shuffle order to the frame's; the map channel stays last.
    let mut first_in = frame.torch_order();
    if frame.noise_map {
        first_in.push(frame.sub_images());
    }
    let (cin0, cout_last) = (convs[0].cin, convs.last().expect("a layer").cout);
    if first_in.len() == cin0 && frame.sub_images() == cout_last {
        reorder_channels(&mut convs, &first_in, &frame.torch_order());
    }
    let fixed_point = md
        .get("fixed_point")
        .map(|v| crate::model::cnn::fixed_point_text(v).map_err(|e| setting("fixed_point", e)))
        .transpose()?;
    let window = super::declared_window(path, Some(&md))?;
    Cnn::checked(convs, meta, frame, fixed_point, window, path)
}
