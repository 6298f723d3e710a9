//! The table's human- and machine-readable outputs: `table.md` and `table.csv`.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::models::Models;
use super::{crop_note, mean, Average, Input, Run, TableArgs};

pub(super) struct TableDoc<'a> {
    /// Runs taken from an earlier invocation (`--resume`).
    pub(super) resumed: usize,
    pub(super) a: &'a TableArgs,
    pub(super) sigmas: &'a [f64],
    pub(super) inputs: &'a [Input],
    pub(super) runs: &'a [Run],
    pub(super) avgs: &'a [Average],
    pub(super) models: &'a Models,
    pub(super) command: &'a str,
    pub(super) figures: &'a [PathBuf],
}

/// A model's path, hash, layers, activation, training sigma and card, in a sentence.
fn model_line(model: &serde_json::Value) -> String {
    let card = &model["card"];
    let hash: String = model["blake3"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(16)
        .collect();
    format!(
        "`{}` (blake3 {hash}…), layers {}, activation {}, sigma* {}{}",
        model["path"].as_str().unwrap_or(""),
        // A graph's is a sentence, not a list.
        match model["widths"].as_str() {
            Some(w) => w.to_string(),
            None => model["widths"].to_string(),
        },
        model["meta"]["activation"].as_str().unwrap_or("?"),
        model["meta"]["sigma"],
        if card.is_null() {
            String::new()
        } else {
            format!(
                "; card `{}`: {}, {} patches seen, trained {} min",
                model["card_path"].as_str().unwrap_or(""),
                card["name"].as_str().unwrap_or("?"),
                card["patches_seen"],
                card["training_minutes"]
            )
        }
    )
}

pub(super) fn markdown(c: &TableDoc) -> String {
    let mut m = String::new();
    let exact = c.runs.iter().filter(|r| r.secure_equals_oracle).count();
    let _ = writeln!(m, "# ppdenoise evaluation table\n");
    let _ = writeln!(m, "Command: `{}`\n", c.command);
    let _ = writeln!(
        m,
        "- Images: `{}` ({} image(s)); {}.",
        c.a.images,
        c.inputs.len(),
        crop_note(c.inputs, c.a.max_size)
    );
    let sizes: Vec<String> = c
        .inputs
        .iter()
        .map(|i| {
            let (h, w) = (i.clean.pixels.nrows() / i.colours, i.clean.pixels.ncols());
            match i.cropped_from {
                Some((oh, ow)) => format!("{} {h}x{w} (of {oh}x{ow})", i.name),
                None => format!("{} {h}x{w}", i.name),
            }
        })
        .collect();
    let _ = writeln!(m, "- Sizes: {}.", sizes.join(", "));
    let noise = match &c.a.noise {
        Some(spec) => format!(
            "signal-dependent, {spec} (variance = A * pixel + B; the σ column only labels the runs), the gateway's per-pixel map computed from the noisy image and shared with it"
        ),
        None => "white Gaussian".into(),
    };
    let rgb = c.inputs.first().is_some_and(|i| i.colours == 3);
    let _ = writeln!(
        m,
        "- Noise: {noise}{}, seed {}, rounded and clipped to 8 bits; stride {}.",
        if rgb {
            ", independent on R, G and B"
        } else {
            ""
        },
        c.a.seed,
        c.a.stride
    );
    if rgb {
        let _ = writeln!(
            m,
            "- RGB metrics as the FFDNet paper scores colour: PSNR from the mean squared error \
             over all three channels; SSIM the mean of the three channels' SSIM (the authors' \
             and KAIR's `calculate_ssim`)."
        );
    }
    if c.models.per_sigma() {
        let _ = writeln!(m, "- Models, one per noise level:");
        for (j, sg) in c.sigmas.iter().enumerate() {
            let _ = writeln!(m, "  - σ={sg}: {}.", model_line(&c.models.of(j).info));
        }
    } else {
        let _ = writeln!(m, "- Model: {}.", model_line(&c.models.of(0).info));
    }
    let _ = writeln!(
        m,
        "- Plaintext = the float model with the activation it was trained with (the paper's baseline); \
         Secure = the full two-server protocol (separate server processes, TLS on localhost), decoded \
         from the servers' output shares. Secure equals the plaintext fixed-point oracle bit for bit \
         in {exact} of {} runs.",
        c.runs.len()
    );
    if c.resumed > 0 {
        let _ = writeln!(
            m,
            "- {} of the {} runs were recorded by earlier invocations into the same --out-dir and \
             reused (`--resume`); their time and traffic are as measured then.",
            c.resumed,
            c.runs.len()
        );
    }
    let _ = writeln!(m);

    let _ = writeln!(m, "## PSNR (dB) and SSIM\n");
    let mut head = String::from("| Image | Method |");
    let mut rule = String::from("|---|---|");
    for sg in c.sigmas {
        let _ = write!(head, " σ={sg} PSNR | σ={sg} SSIM |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(m, "{head}\n{rule}");
    let cell = |r: Option<&Run>, f: &dyn Fn(&Run) -> (f64, f64)| match r {
        Some(r) => {
            let (p, s) = f(r);
            format!(" {p:.2} | {s:.3} |")
        }
        None => " – | – |".into(),
    };
    for i in c.inputs {
        let find = |sg: f64| c.runs.iter().find(|r| r.image == i.name && r.sigma == sg);
        let mut l1 = format!("| {} | Plaintext |", i.name);
        let mut l2 = String::from("| | Secure |");
        for &sg in c.sigmas {
            l1.push_str(&cell(find(sg), &|r| (r.psnr_float, r.ssim_float)));
            l2.push_str(&cell(find(sg), &|r| (r.psnr_secure, r.ssim_secure)));
        }
        let _ = writeln!(m, "{l1}\n{l2}");
    }
    let mut a1 = String::from("| **Average** | Plaintext |");
    let mut a2 = String::from("| | Secure |");
    let mut a3 = String::from("| | Secure − plaintext |");
    let mut a4 = String::from("| | Noisy input |");
    for a in c.avgs {
        let _ = write!(a1, " {:.2} | {:.3} |", a.psnr_float, a.ssim_float);
        let _ = write!(a2, " {:.2} | {:.3} |", a.psnr_secure, a.ssim_secure);
        let _ = write!(
            a3,
            " {:+.4} | {:+.4} |",
            a.gap_db,
            a.ssim_secure - a.ssim_float
        );
        let _ = write!(a4, " {:.2} | |", a.psnr_noisy);
    }
    let _ = writeln!(m, "{a1}\n{a2}\n{a3}\n{a4}\n");
    let worst = c.avgs.iter().map(|a| a.max_abs_gap_db).fold(0.0, f64::max);
    let overall = mean(c.runs.iter().map(|r| r.psnr_secure - r.psnr_float));
    let _ = writeln!(
        m,
        "Secure − plaintext PSNR over all runs: mean {overall:+.4} dB, largest on one image {worst:.4} dB.\n"
    );

    let _ = writeln!(m, "## Secure runs: time and traffic\n");
    let _ = writeln!(
        m,
        "Servers = wall time of the two server processes running together; traffic = application \
         bytes each server sent to the other (TLS records add a little); AND gates = AND \
         gates of the nonlinear circuits (tanh* or ReLU), garbled or on boolean shares with dealer triples.\n"
    );
    let _ = writeln!(
        m,
        "| Image | Size | σ | Patches | Servers (s) | S0→S1 (MB) | S1→S0 (MB) | AND gates | secure = oracle |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in c.runs {
        let _ = writeln!(
            m,
            "| {} | {}x{} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} |",
            r.image,
            r.height,
            r.width,
            r.sigma,
            r.patches,
            r.serve_seconds,
            r.s0_bytes_sent as f64 / 1e6,
            r.s1_bytes_sent as f64 / 1e6,
            r.and_gates,
            if r.secure_equals_oracle {
                "yes (bit-exact)".to_string()
            } else {
                format!("NO (max diff {:.3e})", r.max_abs_diff_secure_oracle)
            }
        );
    }
    let tot_s: f64 = c.runs.iter().map(|r| r.serve_seconds).sum();
    let tot_b: f64 = c
        .runs
        .iter()
        .map(|r| (r.s0_bytes_sent + r.s1_bytes_sent) as f64)
        .sum();
    let _ = writeln!(
        m,
        "\nTotal: {} secure runs, {tot_s:.0} s of server time, {:.2} GB of S0<->S1 traffic.\n",
        c.runs.len(),
        tot_b / 1e9
    );
    if !c.figures.is_empty() {
        let _ = writeln!(m, "## Figures\n");
        for f in c.figures {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            let _ = writeln!(m, "![{name}]({name})\n");
        }
    }
    m
}

pub(super) fn csv(runs: &[Run]) -> String {
    let mut out = String::from(
        "image,height,width,cropped_from,sigma,psnr_noisy,psnr_float,ssim_float,psnr_oracle,ssim_oracle,\
psnr_secure,ssim_secure,secure_equals_oracle,max_abs_diff_secure_oracle,serve_seconds,protocol_seconds,\
s0_bytes_sent,s1_bytes_sent,and_gates,patches,gateway_upload_bytes,receiver_download_bytes,float_seconds\n",
    );
    for r in runs {
        let crop = r
            .cropped_from
            .map(|(h, w)| format!("{h}x{w}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.4},{:.4},{:.5},{:.4},{:.5},{:.4},{:.5},{},{:e},{:.3},{:.3},{},{},{},{},{},{},{:.3}",
            r.image,
            r.height,
            r.width,
            crop,
            r.sigma,
            r.psnr_noisy,
            r.psnr_float,
            r.ssim_float,
            r.psnr_oracle,
            r.ssim_oracle,
            r.psnr_secure,
            r.ssim_secure,
            r.secure_equals_oracle,
            r.max_abs_diff_secure_oracle,
            r.serve_seconds,
            r.protocol_seconds,
            r.s0_bytes_sent,
            r.s1_bytes_sent,
            r.and_gates,
            r.patches,
            r.gateway_upload_bytes,
            r.receiver_download_bytes,
            r.float_seconds
        );
    }
    out
}
