//! The hospital's archive at both ends (issue 49), against a real Orthanc (`make pacs-test`
//! installs it and its DICOMweb plugin from the distribution's packages): a signed 16-bit CT
//! series (pydicom's CT_small made a noisy series) is uploaded, taken out with `share-study
//! --from dicomweb:` (QIDO-RS, WADO-RS), denoised by the two servers, and filed back with
//! `reconstruct --to dicomweb:` (STOW-RS); Orthanc's REST API must then hold one new series in
//! the source study, its instances as many as the source's, derived, their pixels those of
//! the local files and of the plaintext fixed-point oracle; a second filing adds nothing. The
//! archive's mistakes (unreachable, wrong credentials, no such study) are refused naming the
//! URL and the cause, with nothing shared or filed. Each test starts its own Orthanc, on free
//! ports, with authentication on, and stops it.
//!
//! Without Orthanc (a plain `cargo test` on a machine without the package) the tests say so
//! and pass; `make pacs-test` sets PPDENOISE_PACS_REQUIRED, which makes a missing Orthanc a
//! failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, blocks, free_port, ok, run, start_pair, wait_limit};

use crate::common;

/// Where the distribution's package puts the DICOMweb plugin (ORTHANC_DICOMWEB_PLUGIN
/// overrides it).
const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";
const USER: (&str, &str) = ("gateway", "test-password-1");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The series' length: PPDENOISE_PACS_SLICES for the transfers' share of the time
/// (docs/pacs.md's figures: 20 slices), else 3, which keeps the suite short.
fn slices_asked() -> usize {
    std::env::var("PPDENOISE_PACS_SLICES").ok().map_or(3, |v| {
        v.parse::<usize>().expect("PPDENOISE_PACS_SLICES: a count")
    })
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Orthanc and its plugin, or None (with a line) when they are not installed and not
/// required.
fn orthanc_installed() -> Option<PathBuf> {
    let plugin = std::env::var_os("ORTHANC_DICOMWEB_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PLUGIN));
    let found = Command::new("Orthanc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && plugin.is_file();
    if found {
        return Some(plugin);
    }
    assert!(
        std::env::var_os("PPDENOISE_PACS_REQUIRED").is_none(),
        "Orthanc or its DICOMweb plugin ({}) is not installed (make pacs-test installs them)",
        plugin.display()
    );
    eprintln!(
        "skipped: Orthanc or its DICOMweb plugin is not installed here (`make pacs-test` \
         installs them from the distribution's packages)"
    );
    None
}

/// A running Orthanc of the test's own, stopped (by its process id) when dropped.
struct Orthanc {
    child: Child,
    http: u16,
    /// Its DICOM port (AE title TESTPACS, unless its configuration says otherwise).
    dicom: u16,
    /// The user its REST API is called as, and the password.
    user: (String, String),
}

impl Orthanc {
    fn start(dir: &Path, plugin: &Path) -> Orthanc {
        Self::start_with(dir, plugin, serde_json::json!({}))
    }

    /// With `extra` added to its configuration (its DICOM nodes, for DIMSE).
    fn start_with(dir: &Path, plugin: &Path, extra: serde_json::Value) -> Orthanc {
        let db = dir.join("orthanc-db");
        std::fs::create_dir_all(&db).unwrap();
        let (http, dicom) = (free_port(), free_port());
        let mut config = serde_json::json!({
            "Name": "ppdenoise-test",
            "StorageDirectory": db, "IndexDirectory": db,
            "HttpPort": http, "DicomPort": dicom, "DicomAet": "TESTPACS",
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": true,
            "RegisteredUsers": { USER.0: USER.1 },
            "Plugins": [plugin],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        Self::run(dir, &config, (USER.0, USER.1))
    }

    /// Orthanc run with `config` as it is (its ports read from it), called as `user`. Should
    /// another program take one of its ports first, it is run again on two fresh ones.
    fn run(dir: &Path, config: &serde_json::Value, user: (&str, &str)) -> Orthanc {
        let mut config = config.clone();
        for _ in 0..4 {
            match Self::try_run(dir, &config, user) {
                Ok(o) => return o,
                Err(log) if log.contains("already in use") => {
                    eprintln!("Orthanc's port was taken; again on fresh ports");
                    config["HttpPort"] = free_port().into();
                    config["DicomPort"] = free_port().into();
                }
                Err(log) => panic!("Orthanc ended: {log}"),
            }
        }
        panic!("Orthanc's ports were taken four times")
    }

    /// Orthanc run with `config`, once it answers; its log if it ended first.
    fn try_run(
        dir: &Path,
        config: &serde_json::Value,
        user: (&str, &str),
    ) -> Result<Orthanc, String> {
        let port = |k: &str| {
            config[k]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap()
        };
        let (http, dicom) = (port("HttpPort"), port("DicomPort"));
        let cfg = dir.join("orthanc.json");
        std::fs::write(&cfg, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("orthanc.log")).unwrap();
        let child = Command::new("Orthanc")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start Orthanc");
        let user = (user.0.to_string(), user.1.to_string());
        let mut o = Orthanc {
            child,
            http,
            dicom,
            user,
        };
        let t = Instant::now();
        loop {
            if o.get("/system").is_ok_and(|(st, _)| st == 200) {
                break;
            }
            if let Some(st) = o.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join("orthanc.log")).unwrap_or_default();
                return Err(format!("({st}) {log}"));
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "Orthanc never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (_, plugins) = o.get("/plugins").unwrap();
        assert!(plugins.to_string().contains("dicom-web"), "{plugins}");
        Ok(o)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// The archive through DIMSE, called as `aet`.
    fn dimse(&self, aet: &str) -> String {
        format!("dimse:{aet}@127.0.0.1:{}", self.dicom)
    }

    /// The archive as ppdenoise names it.
    fn dicomweb(&self) -> String {
        format!("dicomweb:{}", self.url("/dicom-web/"))
    }

    fn auth(&self) -> String {
        use base64::Engine;
        let up = format!("{}:{}", self.user.0, self.user.1);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(up)
        )
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// `GET path` of the REST API: its status and its JSON (Null when it is not JSON).
    fn get(&self, path: &str) -> Result<(u16, serde_json::Value), ureq::Error> {
        let (st, body) = self.get_bytes(path)?;
        Ok((st, serde_json::from_slice(&body).unwrap_or_default()))
    }

    fn get_bytes(&self, path: &str) -> Result<(u16, Vec<u8>), ureq::Error> {
        let mut r = Self::agent()
            .get(self.url(path))
            .header("Authorization", self.auth())
            .call()?;
        let st = r.status().as_u16();
        let body = r.body_mut().with_config().limit(1 << 30).read_to_vec()?;
        Ok((st, body))
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (st, v) = self.get(path).unwrap();
        assert_eq!(st, 200, "GET {path}: {v}");
        v
    }

    fn post(&self, path: &str, body: &[u8]) -> serde_json::Value {
        let mut r = Self::agent()
            .post(self.url(path))
            .header("Authorization", self.auth())
            .send(body)
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "POST {path}");
        serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap()
    }

    /// Orthanc's ids of the series of the study of UID `study`.
    fn series_of(&self, study: &str) -> Vec<serde_json::Value> {
        let q = serde_json::json!({"Level": "Series", "Expand": true,
            "Query": {"StudyInstanceUID": study}});
        match self.post("/tools/find", q.to_string().as_bytes()) {
            serde_json::Value::Array(a) => a,
            v => panic!("{v}"),
        }
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    root().join(".venv-dicom/bin/python")
}

/// A noisy signed 16-bit CT series of `n` slices from pydicom's CT_small, in `out`.
fn ct_series(out: &Path, n: usize) -> PathBuf {
    let o = Command::new(python())
        .args([
            "-c",
            "from pydicom.data import get_testdata_file as g; print(g('CT_small.dcm'))",
        ])
        .output()
        .expect("run .venv-dicom/bin/python (make dicom-testdata)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let clean = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let o = Command::new(python())
        .arg(root().join("scripts/noisy-series.py"))
        .args([&clean, &s(out), "--slices", &n.to_string(), "--sigma", "20"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(clean)
}

/// A structured report made from the slice `like` (its patient, study and series; no Rows,
/// Columns or Pixel Data; a new SOP Instance UID), written to `out`.
fn not_an_image(like: &Path, out: &Path) {
    let code = "import sys, pydicom\n\
        from pydicom.uid import generate_uid\n\
        d = pydicom.dcmread(sys.argv[1])\n\
        for k in [k for k in d.keys() if k.group == 0x0028] + [0x7FE00010]:\n    del d[k]\n\
        d.SOPClassUID = d.file_meta.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.88.11'\n\
        d.SOPInstanceUID = d.file_meta.MediaStorageSOPInstanceUID = generate_uid()\n\
        d.Modality = 'SR'\n\
        d.save_as(sys.argv[2])\n";
    let o = Command::new(python())
        .args(["-c", code, &s(like), &s(out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Uploads every file of `dir` to Orthanc: the source study's UID.
fn upload(o: &Orthanc, dir: &Path) -> String {
    let mut study = None;
    for f in files(dir) {
        let r = o.post("/instances", &std::fs::read(&f).unwrap());
        assert_eq!(r["Status"], "Success", "{r}");
        study = Some(r["ParentStudy"].as_str().unwrap().to_string());
    }
    let st = o.json(&format!("/studies/{}", study.unwrap()));
    st["MainDicomTags"]["StudyInstanceUID"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `serve --study` of party `p` (model shares `model.p<p>`, keys in `keys/`).
fn serve(dir: &Path, study: &Path, p: u8, addr: &[String]) -> Child {
    let audit = dir.join(format!("audit-s{p}.jsonl"));
    let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
    let f = |n: &str| s(&dir.join(n));
    Command::new(bin())
        .args(["--json", "serve", "--quiet", "--party", &p.to_string()])
        .arg("--insecure-unsigned")
        .args(["--model", &f(&format!("model.p{p}"))])
        .args(["--study", &s(study)])
        .args(["--key", &f(&format!("keys/{me}.key"))])
        .args(["--cert", &f(&format!("keys/{me}.crt"))])
        .args(["--peer-cert", &f(&format!("keys/{peer}.crt"))])
        .args(addr)
        .args(["--timeout", "60"])
        .args(["--state-dir", &f(&format!("state{p}"))])
        .args(["--audit", &s(&audit)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Orthanc -> share-study --from -> gen-triplets -> two servers -> reconstruct --to ->
/// Orthanc: one new series in the source study, whole, derived, and the oracle's pixels; a
/// second filing of the same series adds nothing.
#[test]
fn a_ct_series_goes_from_the_archive_through_the_servers_and_back_as_a_new_series() {
    if !common::have_dicom_testdata() {
        return;
    }
    let Some(plugin) = orthanc_installed() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let pacs = Orthanc::start(d, &plugin);
    let series = d.join("ct");
    ct_series(&series, slices_asked());
    let source = files(&series);
    // And a non-image object of the same series (a structured report): fetched, skipped by
    // share-study with a line naming its file, which no audit line may carry.
    not_an_image(&source[0], &series.join("report.dcm"));
    let study_uid = upload(&pacs, &series);
    assert_eq!(pacs.series_of(&study_uid).len(), 1);
    let auth = d.join("archive.auth");
    std::fs::write(&auth, format!("basic:{}:{}\n", USER.0, USER.1)).unwrap();
    for n in ["s0", "s1"] {
        ok(&["keygen", "--name", n, "--out-dir", &s(&d.join("keys"))]);
    }
    ok(&[
        "share-model",
        "--model",
        &s(&root().join("fixtures/default-model.npz")),
        "--out",
        &s(&d.join("model")),
    ]);
    let (study, out, model) = (d.join("study"), d.join("derived"), s(&d.join("model.pub")));
    // Each party's own audit file.
    let (gw_audit, dealer_audit, rx_audit) = (
        s(&d.join("audit-gateway.jsonl")),
        s(&d.join("audit-dealer.jsonl")),
        s(&d.join("audit-receiver.jsonl")),
    );
    let t = Instant::now();
    let j = ok(&[
        "share-study",
        "--from",
        &pacs.dicomweb(),
        "--study",
        &study_uid,
        "--archive-auth-file",
        &s(&auth),
        "--out",
        &s(&study),
        "--sigma",
        "20HU",
        "--model",
        &model,
        "--quiet",
        "--audit",
        &gw_audit,
    ]);
    assert_eq!(j["slices"], source.len(), "{j}");
    assert_eq!(j["archive"]["study_uid"], study_uid.as_str(), "{j}");
    assert_eq!(j["archive"]["instances"], source.len() + 1, "{j}");
    assert_eq!(j["skipped"].as_array().map(Vec::len), Some(1), "{j}");
    let fetched = d.join("study.fetched");
    assert_eq!(j["archive"]["fetched"], s(&fetched).as_str(), "{j}");
    let fetch_s = j["archive"]["seconds"].as_f64().unwrap();
    ok(&[
        "gen-triplets",
        "--study",
        &s(&study),
        "--model",
        &model,
        "--audit",
        &dealer_audit,
    ]);
    let pair = start_pair(d, |p, addr| serve(d, &study, p, addr));
    for o in pair.map(|c| wait_limit(c, Duration::from_secs(300))) {
        assert!(o.status.success(), "serve --study: {}", stderr(&o));
    }
    let reconstruct = [
        "reconstruct",
        "--insecure-unsigned",
        "--study",
        &s(&study),
        "--out",
        &s(&out),
        "--to",
        &pacs.dicomweb(),
        "--archive-auth-file",
        &s(&auth),
    ];
    let r = ok(&[&reconstruct[..], &["--audit", &rx_audit]].concat());
    let whole_s = t.elapsed().as_secs_f64();
    let file_s = r["filed"]["seconds"].as_f64().unwrap();
    let transfers = fetch_s + file_s;
    eprintln!(
        "{} slices: archive -> archive {whole_s:.2} s, of which fetching {fetch_s:.3} s and \
         filing {file_s:.3} s: the transfers add {:.1}% to the secure study's {:.2} s",
        source.len(),
        100.0 * transfers / (whole_s - transfers),
        whole_s - transfers
    );
    let new_uid = r["series_uid"].as_str().unwrap().to_string();
    assert_eq!(r["filed"]["series_uid"], new_uid.as_str(), "{r}");
    assert_eq!(r["filed"]["study_uid"], study_uid.as_str(), "{r}");

    // What the archive holds now: the source series and one new one, in the same study.
    let check = |when: &str| {
        let all = pacs.series_of(&study_uid);
        assert_eq!(all.len(), 2, "{when}: {all:?}");
        let new: Vec<_> = all
            .iter()
            .filter(|x| x["MainDicomTags"]["SeriesInstanceUID"] == new_uid.as_str())
            .collect();
        assert_eq!(new.len(), 1, "{when}: {all:?}");
        let ids = new[0]["Instances"].as_array().unwrap().clone();
        assert_eq!(ids.len(), source.len(), "{when}: {:?}", new[0]);
        ids
    };
    let ids = check("after reconstruct --to");
    // The plaintext fixed-point oracle of the very files fetched.
    let oracle = d.join("oracle");
    ok(&[
        "denoise",
        "--image",
        &s(&fetched),
        "--arith",
        "fixed",
        "--sigma",
        "20HU",
        "--out",
        &s(&oracle),
    ]);
    let mut seen = std::collections::BTreeMap::new();
    for id in &ids {
        let id = id.as_str().unwrap();
        let tags = pacs.json(&format!("/instances/{id}/simplified-tags"));
        assert!(
            tags["ImageType"].as_str().unwrap().starts_with("DERIVED"),
            "{tags}"
        );
        assert_eq!(tags["StudyInstanceUID"], study_uid.as_str());
        assert_eq!(tags["Modality"], "CT");
        let (st, bytes) = pacs.get_bytes(&format!("/instances/{id}/file")).unwrap();
        assert_eq!(st, 200);
        // Which local file: the one of this SOP Instance UID.
        let sop = tags["SOPInstanceUID"].as_str().unwrap().to_string();
        let local = files(&out)
            .into_iter()
            .find(|f| {
                let o = dicom_object::open_file(f).unwrap();
                o.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .trim_end_matches('\0')
                    == sop
            })
            .expect("the archive's instance is one of the local files");
        let got = d.join(format!("from-archive-{}.dcm", seen.len()));
        std::fs::write(&got, &bytes).unwrap();
        let name = local.file_name().unwrap();
        let (a, b, c) = (
            ppdenoise::image::load(&got).unwrap(),
            ppdenoise::image::load(&local).unwrap(),
            ppdenoise::image::load(oracle.join(name)).unwrap(),
        );
        assert_eq!(
            a, b,
            "{name:?}: the archive's pixels differ from the local file's"
        );
        assert_eq!(
            a, c,
            "{name:?}: the archive's pixels differ from the oracle's"
        );
        seen.insert(sop, ());
    }
    assert_eq!(seen.len(), source.len());

    // reconstruct --to run again (a receiver killed while filing, re-run as it was): refused
    // before anything is filed, pointing to file-series; a new series would be a second copy.
    let o = run(&reconstruct);
    let e = stderr(&o);
    assert!(!o.status.success(), "reconstruct --to ran twice");
    assert!(e.contains("file-series --in"), "{e}");
    assert_eq!(check("after reconstruct --to again"), ids);

    // Filed again (a receiver that died while filing re-runs it): nothing held twice.
    let again = ok(&[
        "file-series",
        "--in",
        &s(&out),
        "--to",
        &pacs.dicomweb(),
        "--archive-auth-file",
        &s(&auth),
        "--quiet",
        "--audit",
        &rx_audit,
    ]);
    assert_eq!(again["filed"]["instances"], source.len(), "{again}");
    assert_eq!(check("after file-series again"), ids);
    let stats = pacs.json("/statistics");
    assert_eq!(stats["CountInstances"], 2 * source.len() + 1, "{stats}");

    // The audit trail: one line per command in each party's file, with what it did.
    let lines = |f: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(f).unwrap();
        // Never a patient's name or ID, nor a path (the folders are the test's).
        let patient = dicom_object::open_file(&source[0]).unwrap();
        for tag in [
            dicom_dictionary_std::tags::PATIENT_NAME,
            dicom_dictionary_std::tags::PATIENT_ID,
        ] {
            let v = patient.element(tag).unwrap().to_str().unwrap();
            let v = v.trim_end_matches(['\0', ' ']);
            assert!(!v.is_empty());
            assert!(!text.contains(v), "{f}: names the patient ({v}): {text}");
        }
        assert!(!text.contains(&s(d)), "{f}: names a path: {text}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let hash = |p: &Path| {
        blake3::hash(&std::fs::read(p).unwrap())
            .to_hex()
            .to_string()
    };
    let gw = lines(&gw_audit);
    assert_eq!(gw.len(), 1);
    let g = &gw[0];
    assert_eq!(
        (&g["command"], &g["party"], &g["result"]),
        (&"share-study".into(), &"gateway".into(), &"ok".into()),
        "{g}"
    );
    assert_eq!(g["study_id"], j["study_id"], "{g}");
    assert_eq!(g["skipped"], 1, "{g}");
    assert_eq!(
        g["archive"]["url"],
        pacs.dicomweb().trim_end_matches('/'),
        "{g}"
    );
    assert_eq!(g["archive"]["study_uid"], study_uid.as_str(), "{g}");
    assert!(g["time"].as_str().unwrap().starts_with("20"), "{g}");
    let roles = |v: &serde_json::Value, k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x["role"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(roles(g, "inputs").contains(&"fetched".into()), "{g}");
    assert!(roles(g, "inputs").contains(&"model".into()), "{g}");
    for r in ["out", "sources", "binding"] {
        assert!(roles(g, "outputs").contains(&r.into()), "{g}");
    }
    let dl = lines(&dealer_audit);
    assert_eq!(
        (dl.len(), &dl[0]["party"], &dl[0]["result"]),
        (1, &"dealer".into(), &"ok".into()),
        "{dl:?}"
    );
    for p in 0..2 {
        let sv = lines(&s(&d.join(format!("audit-s{p}.jsonl"))));
        assert_eq!(sv.len(), 1);
        assert_eq!(sv[0]["party"], format!("s{p}"), "{:?}", sv[0]);
        assert_eq!(sv[0]["study_id"], j["study_id"], "{:?}", sv[0]);
        // Its own and its peer's TLS certificate, by fingerprint.
        assert_eq!(
            roles(&sv[0], "certificates"),
            ["cert", "peer-cert"],
            "{:?}",
            sv[0]
        );
    }
    let rx = lines(&rx_audit);
    assert_eq!(rx.len(), 2, "{rx:?}");
    assert_eq!(
        (&rx[0]["command"], &rx[0]["party"]),
        (&"reconstruct".into(), &"receiver".into())
    );
    assert_eq!(rx[0]["series_uid"], new_uid.as_str());
    assert_eq!(
        rx[0]["filed"]["url"],
        pacs.dicomweb().trim_end_matches('/'),
        "{:?}",
        rx[0]
    );
    assert_eq!(rx[0]["filed"]["study_uid"], study_uid.as_str());
    // Every derived file, by its blake3.
    let mut want: Vec<String> = files(&out).iter().map(|f| hash(f)).collect();
    let mut got: Vec<String> = rx[0]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["role"] == "file")
        .map(|o| o["blake3"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(rx[1]["command"], "file-series");
}

/// The archive's mistakes: each refused naming the URL and the cause, before anything is
/// shared (no study folder, no sources, no fetched copy) or filed.
#[test]
fn an_unreachable_archive_wrong_credentials_and_an_unknown_study_are_refused_by_name() {
    if !common::have_dicom_testdata() {
        return;
    }
    let Some(plugin) = orthanc_installed() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let pacs = Orthanc::start(d, &plugin);
    let series = d.join("ct");
    ct_series(&series, 2);
    let study_uid = upload(&pacs, &series);
    let before = counts(&pacs);
    assert_eq!(before, (1, 2));
    let (good, bad) = (d.join("good.auth"), d.join("bad.auth"));
    std::fs::write(&good, format!("basic:{}:{}", USER.0, USER.1)).unwrap();
    std::fs::write(&bad, format!("basic:{}:wrong", USER.0)).unwrap();
    let closed = format!("dicomweb:http://127.0.0.1:{}/dicom-web", free_port());
    let audit = d.join("audit.jsonl");
    let share = |from: &str, study: &str, auth: &Path| {
        run(&[
            "share-study",
            "--from",
            from,
            "--study",
            study,
            "--archive-auth-file",
            &s(auth),
            "--archive-retries",
            "1",
            "--out",
            &s(&d.join("study")),
            "--sigma",
            "20HU",
            "--audit",
            &s(&audit),
        ])
    };
    let unknown = "1.2.826.0.1.3680043.8.498.999";
    let url = pacs.url("/dicom-web");
    for (what, o, says) in [
        (
            "unreachable",
            share(&closed, &study_uid, &good),
            vec![
                closed.trim_start_matches("dicomweb:"),
                "Connection refused",
                "after 2 tries",
            ],
        ),
        (
            "wrong credentials",
            share(&pacs.dicomweb(), &study_uid, &bad),
            vec![url.as_str(), "HTTP 401", "credentials"],
        ),
        (
            "no such study",
            share(&pacs.dicomweb(), unknown, &good),
            vec![url.as_str(), unknown, "no such study"],
        ),
    ] {
        let e = stderr(&o);
        assert!(!o.status.success(), "{what}: accepted");
        for w in says {
            assert!(e.contains(w), "{what}: {w:?} not in {e}");
        }
        assert!(e.contains("nothing shared"), "{what}: {e}");
        for p in ["study", "study.fetched", "study.sources.json"] {
            assert!(!d.join(p).exists(), "{what}: {p} was written");
        }
    }

    // Each refusal audited as one, without its message (it names files).
    let text = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(
            (&v["command"], &v["result"]),
            (&"share-study".into(), &"error".into()),
            "{v}"
        );
    }

    assert_eq!(counts(&pacs), before, "a refused share changed the archive");

    // Filing with wrong credentials: refused by name, and nothing filed. The series is a new
    // one (its own Series and SOP Instance UIDs, never uploaded): had any instance got
    // through, the archive would count one series and one instance more.
    let fresh = d.join("fresh");
    ct_series(&fresh, 2);
    let o = run(&[
        "file-series",
        "--in",
        &s(&fresh),
        "--to",
        &pacs.dicomweb(),
        "--archive-auth-file",
        &s(&bad),
    ]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("HTTP 401") && e.contains(&url), "{e}");
    assert!(e.contains("2 of 2 instances not filed"), "{e}");
    assert_eq!(
        counts(&pacs),
        before,
        "a refused filing changed the archive"
    );
}

/// The archive's counts of series and instances, through its REST API.
fn counts(o: &Orthanc) -> (u64, u64) {
    let st = o.json("/statistics");
    (
        st["CountSeries"].as_u64().unwrap(),
        st["CountInstances"].as_u64().unwrap(),
    )
}

/// The fetched copy (whole DICOM headers) never lands inside the study folder, which the
/// dealer and the servers get: `--out study/` keeps the default beside it (`study.fetched`,
/// not `study/.fetched`), and a `--fetched` inside `--out` is refused before anything is
/// fetched (no archive needed: the archive named here listens nowhere).
#[test]
fn the_fetched_copy_is_never_inside_the_study_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let closed = format!("dicomweb:http://127.0.0.1:{}/dicom-web", free_port());
    let share = |out: &str, fetched: Option<&str>| {
        let mut args = vec![
            "share-study",
            "--from",
            &closed,
            "--study",
            "1.2.826.0.1.3680043.8.498.1",
            "--archive-retries",
            "0",
            "--out",
            out,
            "--sigma",
            "20HU",
        ];
        if let Some(f) = fetched {
            args.extend(["--fetched", f]);
        }
        run(&args)
    };
    let study = s(&d.join("study"));
    // A trailing slash: the default is beside the folder, so the fetch is tried (and fails
    // on the closed port), never refused as inside.
    let o = share(&format!("{study}/"), None);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("Connection refused") && !e.contains("inside"),
        "{e}"
    );
    for (out, fetched) in [
        (study.clone(), format!("{study}/fetched")),
        (format!("{study}/"), format!("{study}/.fetched")),
        (study.clone(), study.clone()),
        (study.clone(), format!("{}/other/../study/x", s(d))),
        (format!("{}/./study", s(d)), format!("{study}/a/b")),
    ] {
        let o = share(&out, Some(&fetched));
        let e = stderr(&o);
        assert!(
            !o.status.success(),
            "--out {out} --fetched {fetched}: accepted"
        );
        assert!(
            e.contains("inside the study folder") && !e.contains("Connection refused"),
            "--out {out} --fetched {fetched}: {e}"
        );
    }
    assert!(
        std::fs::read_dir(d).unwrap().next().is_none(),
        "something was written"
    );
}

/// The archive's options checked before anything is done (no archive needed): the
/// environment's proxy never used (it would see the patient's data and the credentials),
/// plain http to another machine refused unless asked for (and a name merely starting with
/// `127.` is another machine), credentials in a URL refused without echoing them, the
/// timeout bounded, and an audit file that cannot be written failing the command before it
/// has any effect.
#[test]
fn the_archive_options_are_checked_before_anything_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let study = s(&d.join("study"));
    let closed = format!("dicomweb:http://127.0.0.1:{}/dicom-web", free_port());
    let share = |from: &str, extra: &[&str], env: &[(&str, String)]| {
        let mut c = Command::new(bin());
        c.args([
            "share-study",
            "--from",
            from,
            "--study",
            "1.2.826.0.1.3680043.8.498.1",
            "--archive-retries",
            "0",
            "--archive-timeout",
            "5",
            "--out",
            &study,
            "--sigma",
            "20HU",
        ])
        .args(extra);
        for v in ["NO_PROXY", "no_proxy"] {
            c.env_remove(v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };

    // A proxy in the environment: the request goes straight to the (closed) archive.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = format!("http://{}", proxy.local_addr().unwrap());
    let env: Vec<(&str, String)> = ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "http_proxy"]
        .iter()
        .map(|k| (*k, p.clone()))
        .collect();
    let o = share(&closed, &[], &env);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("Connection refused"), "{e}");
    proxy.set_nonblocking(true).unwrap();
    assert!(
        proxy
            .accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the request went through the environment's proxy"
    );

    for (from, extra, says) in [
        (
            "dicomweb:http://pacs.example/dw",
            vec![],
            "--archive-insecure-http",
        ),
        (
            "dicomweb:http://127.example.org/dw",
            vec![],
            "--archive-insecure-http",
        ),
        (
            "dicomweb:http://u:pa/ss@pacs.example/dw",
            vec![],
            "carries credentials",
        ),
        (
            closed.as_str(),
            vec!["--archive-timeout", "0"],
            "archive-timeout",
        ),
        (
            closed.as_str(),
            vec!["--archive-timeout", "86401"],
            "archive-timeout",
        ),
        // DIMSE: no credentials (the archive knows us by our AE title), a whole address,
        // an AE title of at most 16 characters.
        (
            "dimse:PACS@127.0.0.1:104",
            vec!["--archive-auth-env", "X"],
            "takes no credentials",
        ),
        ("dimse:PACS@127.0.0.1", vec![], "no port"),
        ("dimse:127.0.0.1:104", vec![], "no AE title"),
        (
            "dimse:PACS@127.0.0.1:104",
            vec!["--our-aet", "AVERYLONGAETITLE17"],
            "--our-aet",
        ),
    ] {
        let o = share(from, &extra, &[]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{from} {extra:?}: accepted");
        assert!(e.contains(says), "{from} {extra:?}: {says:?} not in {e}");
        assert!(!e.contains("pa/ss"), "{e}");
    }

    // An audit file that cannot be written: the command fails, and nothing is made.
    let keys = d.join("keys");
    let o = run(&[
        "--audit",
        &s(&d.join("no/such/folder/audit.jsonl")),
        "keygen",
        "--name",
        "s0",
        "--out-dir",
        &s(&keys),
    ]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("--audit") && e.contains("cannot open"), "{e}");
    assert!(!keys.exists(), "keygen ran");
    assert!(!d.join("study").exists());
}

/// The SOP Instance UIDs the archive holds in the series of UID `series`, sorted.
fn sops_held(o: &Orthanc, study: &str, series: &str) -> Vec<String> {
    let all = o.series_of(study);
    let found: Vec<_> = all
        .iter()
        .filter(|x| x["MainDicomTags"]["SeriesInstanceUID"] == series)
        .collect();
    assert!(found.len() <= 1, "{all:?}");
    let Some(one) = found.first() else {
        return Vec::new();
    };
    let id = one["ID"].as_str().unwrap();
    let mut v: Vec<String> = o
        .json(&format!("/series/{id}/instances"))
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["MainDicomTags"]["SOPInstanceUID"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// The SOP Instance UIDs of the DICOM files of `dir`, sorted.
fn sops_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = files(dir)
        .iter()
        .map(|f| {
            let o = dicom_object::open_file(f).unwrap();
            o.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0')
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// A filing cut short, then run again (issue 49's target row: "receiver killed during
/// STOW/C-STORE, then re-run"): the archive ends with exactly one copy of the series, its
/// instances those of the local files (same SOP Instance UIDs), however much the first run
/// had filed. Through DICOMweb twice: a part of the series filed first (what a killed run
/// leaves, deterministically), and a `file-series` process killed once it has said it filed
/// its first instance; and that kill through DIMSE.
#[test]
fn a_filing_cut_short_and_run_again_leaves_exactly_one_copy_of_the_series() {
    if !common::have_dicom_testdata() {
        return;
    }
    let Some(plugin) = orthanc_installed() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let pacs = Orthanc::start(d, &plugin);
    let auth = d.join("archive.auth");
    std::fs::write(&auth, format!("basic:{}:{}\n", USER.0, USER.1)).unwrap();
    let file = |dir: &Path| {
        let mut c = Command::new(bin());
        c.args(["file-series", "--in", &s(dir), "--to", &pacs.dicomweb()])
            .args(["--archive-auth-file", &s(&auth)]);
        c
    };
    let series_uid = |dir: &Path| {
        let o = dicom_object::open_file(&files(dir)[0]).unwrap();
        let v = |t| {
            o.element(t)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0')
                .to_string()
        };
        (
            v(dicom_dictionary_std::tags::STUDY_INSTANCE_UID),
            v(dicom_dictionary_std::tags::SERIES_INSTANCE_UID),
        )
    };

    // A part filed first (2 of 5 instances), then the whole.
    let series = d.join("series");
    ct_series(&series, 5);
    let (study, uid) = series_uid(&series);
    let part = d.join("part");
    std::fs::create_dir(&part).unwrap();
    for f in &files(&series)[..2] {
        std::fs::copy(f, part.join(f.file_name().unwrap())).unwrap();
    }
    assert!(file(&part).output().unwrap().status.success());
    assert_eq!(sops_held(&pacs, &study, &uid).len(), 2);
    let o = file(&series).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sops_held(&pacs, &study, &uid), sops_of(&series));
    assert_eq!(counts(&pacs), (1, 5));

    // A run killed mid-filing: after it says it filed its first of 20 instances.
    let series = d.join("series20");
    ct_series(&series, 20);
    let (study, uid) = series_uid(&series);
    kill_after_first_of_20(file(&series));
    let held = sops_held(&pacs, &study, &uid).len();
    eprintln!("file-series killed after filing {held} of 20 instances");
    assert!(held >= 1, "{held}");
    let o = file(&series).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sops_held(&pacs, &study, &uid), sops_of(&series));
    assert_eq!(counts(&pacs), (2, 25));

    // The same through DIMSE (C-STORE): killed after its first of 20, then run again.
    let store = |dir: &Path| {
        let mut c = Command::new(bin());
        c.args([
            "file-series",
            "--in",
            &s(dir),
            "--to",
            &pacs.dimse("TESTPACS"),
        ])
        .args(["--our-aet", "PPDENOISE"]);
        c
    };
    let series = d.join("series20-dimse");
    ct_series(&series, 20);
    let (study, uid) = series_uid(&series);
    kill_after_first_of_20(store(&series));
    let held = sops_held(&pacs, &study, &uid).len();
    eprintln!("file-series --to dimse: killed after filing {held} of 20 instances");
    assert!(held >= 1, "{held}");
    let o = store(&series).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sops_held(&pacs, &study, &uid), sops_of(&series));
    assert_eq!(counts(&pacs), (3, 45));
}

/// Runs `cmd` (a filing of 20 instances) until it says it filed its first, then kills it.
fn kill_after_first_of_20(mut cmd: Command) {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    loop {
        let l = lines
            .next()
            .expect("file-series ended before filing")
            .unwrap();
        if l.starts_with("filed 1/20") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// dcmtk's storescu, or None (with a line) when it is not installed and not required.
fn dcmtk_installed() -> Option<()> {
    let found = Command::new("storescu")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(());
    }
    assert!(
        std::env::var_os("PPDENOISE_PACS_REQUIRED").is_none(),
        "dcmtk's storescu is not installed (make pacs-test installs it)"
    );
    eprintln!(
        "skipped: dcmtk (storescu) is not installed here (`make pacs-test` installs it from \
         the distribution's packages)"
    );
    None
}

/// `ppdenoise receive` started on a free port: the child and its port, once it listens.
fn receive(out: &Path, audit: &Path, extra: &[&str]) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(bin())
        .args(["--json", "--audit", &s(audit), "receive", "--aet", "PPDRX"])
        .args(["--port", &port.to_string(), "--out", &s(out)])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start receive");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "receive never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // That probe was an association of its own that never began: it ends as rejected.
    (child, port)
}

/// storescu sending `files` to the receiver on `port` as called AE `aet`.
fn storescu(port: u16, aet: &str, files: &[PathBuf]) -> Output {
    Command::new("storescu")
        .args([
            "-nh",
            "-aet",
            "HOSPITALSCU",
            "-aec",
            aet,
            "127.0.0.1",
            &port.to_string(),
        ])
        .args(files)
        .output()
        .expect("run storescu")
}

/// A DICOM file's data set: what follows its file meta group.
fn data_set(bytes: &[u8]) -> &[u8] {
    let len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    &bytes[144 + len..]
}

/// A slice made from `like` with `edit` (Python, on the pydicom data set `d`), a new SOP
/// Instance UID, written to `out`.
fn edited(like: &Path, out: &Path, edit: &str) {
    let code = format!(
        "import sys, pydicom, numpy as np\n\
         from pydicom.uid import generate_uid\n\
         d = pydicom.dcmread(sys.argv[1])\n\
         {edit}\n\
         d.SOPInstanceUID = d.file_meta.MediaStorageSOPInstanceUID = generate_uid()\n\
         d.save_as(sys.argv[2])\n"
    );
    let o = Command::new(python())
        .args(["-c", &code, &s(like), &s(out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn audit_lines(f: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(f)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An archive pushing into `ppdenoise receive` (dcmtk's storescu): the series lands in one
/// folder of its own, each data set as sent, which `share-study --in` takes; a structured
/// report, an image without pixel data and an instance past --max-instance-mib are refused;
/// a wrong called AE title is rejected; SIGTERM stops the receiver cleanly, its summary
/// printed; one audit line per association.
#[test]
fn storescu_pushes_a_series_into_receive_and_share_study_takes_its_folder() {
    if !common::have_dicom_testdata() {
        return;
    }
    if dcmtk_installed().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let series = d.join("ct");
    ct_series(&series, 3);
    let source = files(&series);
    let odd = d.join("odd");
    std::fs::create_dir(&odd).unwrap();
    let (sr, nopix, big) = (
        odd.join("sr.dcm"),
        odd.join("nopix.dcm"),
        odd.join("big.dcm"),
    );
    not_an_image(&source[0], &sr);
    edited(&source[0], &nopix, "del d[0x7FE00010]");
    edited(
        &source[0],
        &big,
        "d.Rows = d.Columns = 1024\nd.PixelData = np.zeros((1024, 1024), np.int16).tobytes()",
    );
    let (got, audit) = (d.join("received"), d.join("audit-receive.jsonl"));
    let (child, port) = receive(&got, &audit, &["--max-instance-mib", "1"]);

    let o = storescu(port, "PPDRX", &source);
    assert!(o.status.success(), "storescu: {}", stderr(&o));
    // A structured report: no presentation context is accepted for it.
    let o = storescu(port, "PPDRX", std::slice::from_ref(&sr));
    assert!(
        stderr(&o).contains("No presentation context"),
        "a report was taken: {}",
        stderr(&o)
    );
    // An image class without pixel data, and one instance over the bound: refused one by one
    // (a C-STORE failure status each, which the audit lines below check), the association
    // going on.
    let o = storescu(port, "PPDRX", &[nopix.clone(), big.clone()]);
    assert!(o.status.success(), "storescu: {}", stderr(&o));
    // A called AE title that is not ours: rejected.
    let o = storescu(port, "SOMEONEELSE", &source[..1]);
    assert!(
        stderr(&o).contains("Called AE Title Not Recognized"),
        "{}",
        stderr(&o)
    );

    // SIGTERM: a clean stop, the summary printed.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let o = wait_limit(child, Duration::from_secs(20));
    assert!(o.status.success(), "receive: {}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["stored"], 3, "{j}");
    assert_eq!(j["refused"], 2, "{j}");

    // One folder, the series' UID; each file the instance's data set as storescu sent it:
    // the source's, less the trailing padding dcmtk drops.
    let folders = files(&got);
    assert_eq!(folders.len(), 1, "{folders:?}");
    let series_uid = folders[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(j["series"][0], series_uid.as_str(), "{j}");
    let received = files(&folders[0]);
    assert_eq!(received.len(), source.len());
    for src in &source {
        let sb = std::fs::read(src).unwrap();
        let want = data_set(&sb);
        let hit = received.iter().find(|r| {
            let rb = std::fs::read(r).unwrap();
            let got = data_set(&rb);
            want.starts_with(got)
                && (want.len() == got.len()
                    || want[got.len()..].starts_with(&[0xFC, 0xFF, 0xFC, 0xFF]))
        });
        assert!(
            hit.is_some(),
            "{}: no received file holds its data set",
            src.display()
        );
    }
    // Only image files, only valid UIDs as names: nothing else was written.
    for r in &received {
        let n = r.file_name().unwrap().to_string_lossy().into_owned();
        assert!(n.ends_with(".dcm") && !n.starts_with('.'), "{n}");
    }

    // share-study --in takes the folder.
    ok(&[
        "share-model",
        "--model",
        &s(&root().join("fixtures/default-model.npz")),
        "--out",
        &s(&d.join("model")),
    ]);
    let j = ok(&[
        "share-study",
        "--in",
        &s(&folders[0]),
        "--out",
        &s(&d.join("study")),
        "--sigma",
        "20HU",
        "--model",
        &s(&d.join("model.pub")),
        "--quiet",
    ]);
    assert_eq!(j["slices"], source.len(), "{j}");

    // The audit: one line per association (the port probe's too), then the run's own.
    let lines = audit_lines(&audit);
    let assoc: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.get("association").is_some())
        .collect();
    let stored: Vec<u64> = assoc
        .iter()
        .map(|l| l["association"]["stored"].as_u64().unwrap())
        .collect();
    assert!(stored.contains(&3), "{assoc:?}");
    let refused: Vec<serde_json::Value> = assoc
        .iter()
        .flat_map(|l| l["association"]["refused"].as_array().unwrap().clone())
        .collect();
    assert_eq!(refused, [0xA900, 0xA700], "{assoc:?}");
    assert!(assoc
        .iter()
        .all(|l| l["party"] == "gateway" && l["command"] == "receive"));
    let last = lines.last().unwrap();
    assert_eq!(
        (last["command"].as_str(), last["result"].as_str()),
        (Some("receive"), Some("ok"))
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(&s(d)), "the audit names a path: {text}");

    // --idle-timeout: a receiver nobody sends to stops by itself, cleanly.
    let t = Instant::now();
    let (child, _) = receive(
        &d.join("idle"),
        &d.join("audit-idle.jsonl"),
        &["--idle-timeout", "2"],
    );
    let o = wait_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "receive --idle-timeout: {}", stderr(&o));
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["stored"], 0, "{j}");
}

/// Connects to `port`, sends an A-ASSOCIATE-RQ's header declaring 200 bytes, then one byte
/// every 100 ms (inside each --assoc-timeout) until the receiver closes the connection, or
/// 15 s: how long that took.
fn drip_association(port: u16) -> Duration {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    c.write_all(&[1, 0, 0, 0, 0, 200]).unwrap();
    let mut buf = [0u8; 64];
    while t.elapsed() < Duration::from_secs(15) {
        match c.read(&mut buf) {
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if c.write_all(&[0]).is_err() {
            break;
        }
    }
    t.elapsed()
}

/// `receive --once --negotiation-secs 4 --assoc-max-secs 60`: a peer dripping its
/// association request a byte inside every --assoc-timeout (2 s: a stall of a loaded machine
/// is not taken for silence) is cut at the negotiation deadline, well before
/// --assoc-max-secs, with an audit line saying so; neither it nor a bare connection (the port
/// probe, one that never speaks) is "the" association of --once; storescu's series, next,
/// is received and ends the run.
#[test]
fn receive_cuts_an_association_at_its_deadline_and_once_waits_for_an_accepted_one() {
    if !common::have_dicom_testdata() {
        return;
    }
    if dcmtk_installed().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let series = d.join("ct");
    ct_series(&series, 2);
    let source = files(&series);
    let (got, audit) = (d.join("received"), d.join("audit.jsonl"));
    let (mut child, port) = receive(
        &got,
        &audit,
        &[
            "--once",
            "--negotiation-secs",
            "4",
            "--assoc-max-secs",
            "60",
            "--assoc-timeout",
            "2",
            "--quiet",
        ],
    );
    // One that connects and says nothing: rejected at the read timeout.
    let silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    drop(silent);
    let took = drip_association(port);
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_secs(12),
        "a sender dripping its association request was cut after {took:?}, not at \
         --negotiation-secs 4"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "receive --once ended before any association was accepted"
    );
    let o = storescu(port, "PPDRX", &source);
    assert!(o.status.success(), "storescu: {}", stderr(&o));
    let o = wait_limit(child, Duration::from_secs(20));
    assert!(o.status.success(), "receive: {}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (j["stored"].as_u64(), j["associations"].as_u64()),
        (Some(2), Some(1)),
        "{j}"
    );
    let ends: Vec<String> = audit_lines(&audit)
        .iter()
        .filter_map(|l| l["association"]["end"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        ends.iter().filter(|e| *e == "deadline").count(),
        1,
        "{ends:?}"
    );
    assert_eq!(
        ends.last().map(String::as_str),
        Some("released"),
        "{ends:?}"
    );
}

/// Orthanc -> share-study --from dimse: (C-FIND, C-MOVE to our AE) -> gen-triplets -> two
/// servers -> reconstruct --to dimse: (C-STORE) -> Orthanc: one new series in the source
/// study, as many instances as the source, the oracle's pixels; filed again, nothing held
/// twice. Unreachable, a wrong AE title and an unknown study are refused naming the archive
/// and the cause, nothing shared.
#[test]
fn a_ct_series_goes_from_the_archive_through_the_servers_and_back_through_dimse() {
    if !common::have_dicom_testdata() {
        return;
    }
    let Some(plugin) = orthanc_installed() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let our_port = free_port();
    let pacs = Orthanc::start_with(
        d,
        &plugin,
        serde_json::json!({
            "DicomCheckCalledAet": true,
            "DicomModalities": { "ppdenoise": ["PPDENOISE", "127.0.0.1", our_port] },
        }),
    );
    let series = d.join("ct");
    ct_series(&series, slices_asked());
    let source = files(&series);
    let study_uid = upload(&pacs, &series);
    let archive = pacs.dimse("TESTPACS");
    let ours = [
        "--our-aet",
        "PPDENOISE",
        "--our-port",
        &our_port.to_string(),
    ]
    .map(String::from);
    let ours: Vec<&str> = ours.iter().map(String::as_str).collect();
    for n in ["s0", "s1"] {
        ok(&["keygen", "--name", n, "--out-dir", &s(&d.join("keys"))]);
    }
    ok(&[
        "share-model",
        "--model",
        &s(&root().join("fixtures/default-model.npz")),
        "--out",
        &s(&d.join("model")),
    ]);
    let (study, out, model) = (d.join("study"), d.join("derived"), s(&d.join("model.pub")));
    let share = |from: &str, uid: &str, out: &Path| -> Vec<String> {
        [
            "share-study",
            "--from",
            from,
            "--study",
            uid,
            "--out",
            &s(out),
            "--sigma",
            "20HU",
            "--model",
            &model,
            "--quiet",
            "--archive-timeout",
            "20",
        ]
        .iter()
        .map(|x| x.to_string())
        .chain(ours.iter().map(|x| x.to_string()))
        .collect()
    };

    // The archive's mistakes first: each names the archive and the cause; nothing shared.
    let closed = format!("dimse:TESTPACS@127.0.0.1:{}", free_port());
    let wrong = pacs.dimse("NOTTHEPACS");
    for (from, uid, says) in [
        (closed.as_str(), study_uid.as_str(), "unreachable"),
        (wrong.as_str(), study_uid.as_str(), "rejected"),
        (archive.as_str(), "1.2.3.4.5.6.7", "no such study"),
        // Our AE title unknown to the archive (as a move destination, or at all).
        (archive.as_str(), study_uid.as_str(), "STRANGER"),
    ] {
        let bad = d.join("bad-study");
        let mut a = share(from, uid, &bad);
        if says == "STRANGER" {
            let at = a.iter().position(|x| x == "--our-aet").unwrap();
            a[at + 1] = "STRANGER".into();
        }
        let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let e = stderr(&o);
        assert!(!o.status.success(), "{from} {uid}: shared");
        eprintln!("{from} {uid}: {}", e.trim());
        assert!(e.contains(from) && e.contains(says), "{from} {uid}: {e}");
        assert!(
            !bad.exists() && !d.join("bad-study.fetched").exists(),
            "{from}: {e}"
        );
        assert!(!d.join("bad-study.sources").exists(), "{from}: {e}");
    }

    // An archive that caps its C-FIND answers (Orthanc's LimitFindInstances) below the
    // series' length: its own count says so; nothing shared.
    if source.len() > 2 {
        let capped = Orthanc::start_with(
            &d.join("capped"),
            &plugin,
            serde_json::json!({
                "LimitFindInstances": 2,
                "DicomModalities": { "ppdenoise": ["PPDENOISE", "127.0.0.1", our_port] },
            }),
        );
        upload(&capped, &series);
        let from = capped.dimse("TESTPACS");
        let bad = d.join("capped-study");
        let a = share(&from, &study_uid, &bad);
        let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let e = stderr(&o);
        assert!(!o.status.success(), "a capped answer shared");
        assert!(e.contains(&from) && e.contains("a capped answer"), "{e}");
        assert!(
            !bad.exists() && !d.join("capped-study.fetched").exists(),
            "{e}"
        );
    }

    let gw_audit = s(&d.join("audit-gateway.jsonl"));
    let t = Instant::now();
    let mut a = share(&archive, &study_uid, &study);
    a.extend(["--audit".to_string(), gw_audit.clone()]);
    let j = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(j["slices"], source.len(), "{j}");
    assert_eq!(j["archive"]["url"], archive.as_str(), "{j}");
    assert_eq!(j["archive"]["instances"], source.len(), "{j}");
    let fetched = d.join("study.fetched");
    ok(&["gen-triplets", "--study", &s(&study), "--model", &model]);
    let pair = start_pair(d, |p, addr| serve(d, &study, p, addr));
    for o in pair.map(|c| wait_limit(c, Duration::from_secs(300))) {
        assert!(o.status.success(), "serve --study: {}", stderr(&o));
    }
    let r = ok(&[
        &[
            "reconstruct",
            "--insecure-unsigned",
            "--study",
            &s(&study),
            "--out",
            &s(&out),
            "--to",
            &archive,
        ][..],
        &ours[..],
    ]
    .concat());
    let new_uid = r["series_uid"].as_str().unwrap().to_string();
    let whole_s = t.elapsed().as_secs_f64();
    let (fetch_s, file_s) = (
        j["archive"]["seconds"].as_f64().unwrap(),
        r["filed"]["seconds"].as_f64().unwrap(),
    );
    eprintln!(
        "{} slices through DIMSE: archive -> archive {whole_s:.2} s, of which C-FIND and \
         C-MOVE {fetch_s:.3} s and C-STORE {file_s:.3} s",
        source.len()
    );
    assert_eq!(r["filed"]["archive"], archive.as_str(), "{r}");
    assert_eq!(r["filed"]["study_uid"], study_uid.as_str(), "{r}");
    assert_eq!(r["filed"]["instances"], source.len(), "{r}");

    let check = |when: &str| {
        let all = pacs.series_of(&study_uid);
        assert_eq!(all.len(), 2, "{when}: {all:?}");
        let new: Vec<_> = all
            .iter()
            .filter(|x| x["MainDicomTags"]["SeriesInstanceUID"] == new_uid.as_str())
            .collect();
        assert_eq!(new.len(), 1, "{when}: {all:?}");
        let ids = new[0]["Instances"].as_array().unwrap().clone();
        assert_eq!(ids.len(), source.len(), "{when}: {:?}", new[0]);
        ids
    };
    let ids = check("after reconstruct --to dimse:");
    let oracle = d.join("oracle");
    // The fetched copy: one folder, the series'.
    let fetched_series = files(&fetched);
    assert_eq!(fetched_series.len(), 1, "{fetched_series:?}");
    ok(&[
        "denoise",
        "--image",
        &s(&fetched_series[0]),
        "--arith",
        "fixed",
        "--sigma",
        "20HU",
        "--out",
        &s(&oracle),
    ]);
    for id in &ids {
        let id = id.as_str().unwrap();
        let tags = pacs.json(&format!("/instances/{id}/simplified-tags"));
        assert!(
            tags["ImageType"].as_str().unwrap().starts_with("DERIVED"),
            "{tags}"
        );
        let sop = tags["SOPInstanceUID"].as_str().unwrap().to_string();
        let (st, bytes) = pacs.get_bytes(&format!("/instances/{id}/file")).unwrap();
        assert_eq!(st, 200);
        let local = files(&out)
            .into_iter()
            .find(|f| {
                let o = dicom_object::open_file(f).unwrap();
                o.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .trim_end_matches('\0')
                    == sop
            })
            .expect("the archive's instance is one of the local files");
        let got = d.join(format!("from-archive-{sop}.dcm"));
        std::fs::write(&got, &bytes).unwrap();
        let name = local.file_name().unwrap();
        let a = ppdenoise::image::load(&got).unwrap();
        assert_eq!(
            a,
            ppdenoise::image::load(&local).unwrap(),
            "{name:?}: not the local file's"
        );
        assert_eq!(
            a,
            ppdenoise::image::load(oracle.join(name)).unwrap(),
            "{name:?}: not the oracle's"
        );
    }

    // Filed again: the same SOP Instance UIDs, nothing held twice.
    let again = ok(&[
        &["file-series", "--in", &s(&out), "--to", &archive, "--quiet"][..],
        &ours[..],
    ]
    .concat());
    assert_eq!(again["filed"]["instances"], source.len(), "{again}");
    assert_eq!(check("after file-series again"), ids);
    let stats = pacs.json("/statistics");
    assert_eq!(stats["CountInstances"], 2 * source.len(), "{stats}");

    // A structured report joins the source series in the archive: shared again, it is left
    // there with a line, the images moved one by one (IMAGE level).
    let report = d.join("report");
    std::fs::create_dir(&report).unwrap();
    not_an_image(&source[0], &report.join("report.dcm"));
    upload(&pacs, &report);
    let a = share(&archive, &study_uid, &d.join("study2"));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let source_series = fetched_series[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let o = run(&[&a[..], &["--series", &source_series]].concat());
    let j = common::summary(&o, "share-study --from dimse: with a report");
    let e = stderr(&o);
    assert!(
        e.contains("1.2.840.10008.5.1.4.1.1.88.11, not an image"),
        "{e}"
    );
    assert_eq!(j["slices"], source.len(), "{j}");
    assert_eq!(j["archive"]["instances"], source.len(), "{j}");

    // The gateway's audit line names the archive and the study, never a path.
    let gw = audit_lines(Path::new(&gw_audit));
    assert_eq!(gw.len(), 1, "{gw:?}");
    assert_eq!(gw[0]["archive"]["url"], archive.as_str(), "{gw:?}");
    assert_eq!(gw[0]["archive"]["study_uid"], study_uid.as_str(), "{gw:?}");
    assert!(!std::fs::read_to_string(&gw_audit).unwrap().contains(&s(d)));
}

/// docs/pacs.md's commands, as written (issue 49's "Done when"): every `sh` block of the page
/// before "Tested" in order, after the "Once" lines of docs/dicom.md's walk-through (keys, model shares,
/// opened weights), run by bash against an Orthanc started from the page's two
/// configurations (only its folders, ports, password, plugin path and our node's host and
/// port are the test's). The page takes the series out through DICOMweb and files the
/// derived series back, then through DIMSE, then has Orthanc push the series into `ppdenoise
/// receive` and shares the folder it wrote. Checked: the study holds the source series and
/// one derived series per route, each as many instances as the source, the local files'
/// SOP Instance UIDs, DERIVED; the pushed folder holds the series, shared.
#[test]
fn the_pages_commands_run_as_written() {
    if !common::have_dicom_testdata() {
        return;
    }
    let Some(plugin) = orthanc_installed() else {
        return;
    };
    if !Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            std::env::var_os("PPDENOISE_PACS_REQUIRED").is_none(),
            "curl is not installed (make pacs-test installs it)"
        );
        eprintln!("skipped: curl (the page's push through Orthanc's REST API) is not installed");
        return;
    }
    let page = std::fs::read_to_string(root().join("docs/pacs.md")).unwrap();
    let walk = std::fs::read_to_string(root().join("docs/dicom.md")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    // The archive, configured as the page says.
    let json = blocks(&page, "json");
    assert_eq!(json.len(), 2, "docs/pacs.md: two Orthanc configurations");
    let mut config: serde_json::Value = serde_json::from_str(json[0]).unwrap();
    let dimse: serde_json::Value = serde_json::from_str(json[1]).unwrap();
    for (k, v) in dimse.as_object().unwrap() {
        config[k] = v.clone();
    }
    let password = "the-walk-through's-password";
    let (http, dicom, our_port) = (free_port(), free_port(), free_port());
    let db = d.join("orthanc-db");
    std::fs::create_dir(&db).unwrap();
    let ours = [
        ("StorageDirectory", serde_json::json!(db)),
        ("IndexDirectory", serde_json::json!(db)),
        ("HttpPort", serde_json::json!(http)),
        ("DicomPort", serde_json::json!(dicom)),
        (
            "RegisteredUsers",
            serde_json::json!({ "ppdenoise": password }),
        ),
        ("Plugins", serde_json::json!([plugin])),
    ];
    for (k, v) in ours {
        assert!(
            config.get(k).is_some(),
            "docs/pacs.md's configuration: no {k}"
        );
        config[k] = v;
    }
    let node = &mut config["DicomModalities"]["ppdenoise"];
    assert_eq!(node[1], "GATEWAY-HOST", "{node}");
    (node[1], node[2]) = ("127.0.0.1".into(), our_port.into());
    let aet = config["DicomAet"].as_str().unwrap().to_string();
    let pacs = Orthanc::run(d, &config, ("ppdenoise", password));

    let series = d.join("ct");
    ct_series(&series, slices_asked());
    let source = files(&series);
    let study_uid = upload(&pacs, &series);
    let series_uid =
        common::dicom_attr(&source[0], dicom_dictionary_std::tags::SERIES_INSTANCE_UID);

    let once = blocks(&walk, "sh")
        .first()
        .and_then(|b| b.split("\n# The series:").next())
        .expect("docs/dicom.md's walk-through, its \"Once\" lines");
    // The page's commands end where "Tested" begins (its blocks there are the project's).
    let commands = page.split("\n## Tested").next().unwrap();
    let script = [once]
        .into_iter()
        .chain(blocks(commands, "sh"))
        .collect::<Vec<_>>()
        .join("\n");
    let run = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(d)
        .env("B", bin())
        .env("MODEL", root().join("fixtures/default-model.npz"))
        .env("ADDR", common::own_loopback_addr())
        .env("WEB", pacs.url("/dicom-web/"))
        .env("PACS", format!("{aet}@127.0.0.1:{}", pacs.dicom))
        .env("REST", pacs.url(""))
        .env("OUR_PORT", our_port.to_string())
        .env("STUDY_UID", &study_uid)
        .env("SERIES_UID", &series_uid)
        .env("PASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_limit(run, Duration::from_secs(900));
    assert!(
        o.status.success(),
        "docs/pacs.md's commands failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );

    // One derived series per route beside the source, each the local files' instances.
    let all = pacs.series_of(&study_uid);
    assert_eq!(all.len(), 3, "{all:?}");
    for out in ["denoised", "dimse-denoised"] {
        let local = d.join(out);
        let derived = common::dicom_attr(
            &files(&local)[0],
            dicom_dictionary_std::tags::SERIES_INSTANCE_UID,
        );
        assert_ne!(derived, series_uid);
        let held = sops_held(&pacs, &study_uid, &derived);
        assert_eq!(held.len(), source.len(), "{out}: {held:?}");
        assert_eq!(held, sops_of(&local), "{out}");
        let new = all
            .iter()
            .find(|x| x["MainDicomTags"]["SeriesInstanceUID"] == derived.as_str())
            .unwrap();
        let first = new["Instances"][0].as_str().unwrap();
        let tags = pacs.json(&format!("/instances/{first}/simplified-tags"));
        assert!(
            tags["ImageType"].as_str().unwrap().starts_with("DERIVED"),
            "{out}: {tags}"
        );
    }
    // The push: the source series, in a folder of its UID, shared.
    assert_eq!(
        files(&d.join("incoming")),
        vec![d.join("incoming").join(&series_uid)]
    );
    assert_eq!(
        sops_of(&d.join("incoming").join(&series_uid)),
        sops_of(&series)
    );
    assert!(d.join("pushed-study").is_dir());
    // Each party's audit file has its lines, every one a success.
    for (f, at_least) in [("gateway-audit.jsonl", 4), ("receiver-audit.jsonl", 2)] {
        let lines = audit_lines(&d.join(f));
        assert!(lines.len() >= at_least, "{f}: {lines:?}");
        assert!(lines.iter().all(|l| l["result"] == "ok"), "{f}: {lines:?}");
    }
}
