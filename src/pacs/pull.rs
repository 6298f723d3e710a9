//! `share-study --from dicomweb:URL --study UID`: the study's series listed with QIDO-RS,
//! one picked, its instances listed and each fetched with WADO-RS into a new folder of the
//! receiver's (moved into place only when every instance came whole), which `share-study`
//! then shares as it shares `--in DIR`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::http::{status_error, Client, OverBound};
use super::{checked_uid, multipart, AnswerBudget};

/// The bound of a QIDO-RS answer (a list of series or instances).
const MAX_LIST: u64 = 64 << 20;
/// The bound of one instance (a single-frame slice is a few MB; a multi-frame object more).
pub const MAX_INSTANCE: u64 = 2 << 30;
/// The most instances a series may list.
const MAX_INSTANCES: usize = crate::formats::study::MAX_SLICES;

/// What was fetched.
pub struct Fetched {
    pub series_uid: String,
    pub instances: usize,
    pub bytes: u64,
}

/// One item of a QIDO-RS list, reduced as it is parsed to the attributes used: every other
/// attribute is skipped by the parser, never held (a page is up to [`MAX_LIST`] bytes, and a
/// list many pages).
#[derive(serde::Deserialize, Default)]
struct Item {
    #[serde(rename = "0020000E", default)]
    series: Attr,
    #[serde(rename = "00200011", default)]
    number: Attr,
    #[serde(rename = "00080060", default)]
    modality: Attr,
    #[serde(rename = "00080018", default)]
    sop: Attr,
}

/// An attribute's first value as text (a string or a number), cut to what is kept
/// ([`crate::pacs::kept_text`]); none when absent or of another kind.
#[derive(Default)]
struct Attr(Option<String>);

impl<'de> serde::Deserialize<'de> for Attr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Attr, D::Error> {
        #[derive(serde::Deserialize)]
        struct Raw {
            #[serde(rename = "Value", default)]
            value: Option<First>,
        }
        Ok(Attr(Raw::deserialize(d)?.value.and_then(|f| f.0)))
    }
}

/// A value list's first value, the rest skipped.
struct First(Option<String>);

impl<'de> serde::Deserialize<'de> for First {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<First, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = First;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of values")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<First, A::Error> {
                let first = seq.next_element::<Scalar>()?.and_then(|s| s.0);
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A string or a number as text; anything else (a person name's object, null) none.
struct Scalar(Option<String>);

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Scalar, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value")
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Scalar, E> {
                Ok(Scalar(Some(crate::pacs::kept_text(v))))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_unit<E>(self) -> std::result::Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Scalar, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Scalar, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A DICOM JSON list (QIDO-RS's answer) at `url`, each item reduced as it is parsed, its
/// bytes and items taken from the command's `budget`; none when the archive says the
/// resource does not exist (404, or 204 No Content).
fn list(c: &Client, url: &str, budget: &mut AnswerBudget) -> Result<Option<Vec<Item>>> {
    // A page within its own bound and what the command may still read, whichever is less.
    let limit = MAX_LIST.min(budget.bytes_left().saturating_add(1));
    let r = match c.get(url, "application/dicom+json", limit) {
        Ok(r) => r,
        Err(e) if limit < MAX_LIST && e.is::<OverBound>() => {
            budget.take(limit, 0, &format!("GET {url}"))?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    budget.take(r.body.len() as u64, 0, &format!("GET {url}"))?;
    match r.status {
        200 => {}
        204 | 404 => return Ok(None),
        _ => return Err(status_error("GET", url, &r)),
    }
    if r.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // Items past what the command may still take are refused as they are parsed: a page of
    // 64 MiB of `{}` would otherwise be 22 million items, gigabytes, before any count.
    let cap = budget.items_left();
    let over = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(&r.body);
    let parsed = serde::de::DeserializeSeed::deserialize(UpTo { cap, over: &over }, &mut de)
        .and_then(|items| de.end().map(|()| items));
    if over.get() {
        budget.take(0, cap.saturating_add(1), &format!("GET {url}"))?;
    }
    let items = parsed.map_err(|e| {
        if e.is_data() {
            anyhow!("GET {url}: the answer is not a DICOM JSON list ({e})")
        } else {
            anyhow!("GET {url}: the answer is not DICOM JSON ({e})")
        }
    })?;
    budget.take(0, items.len(), &format!("GET {url}"))?;
    Ok((!items.is_empty()).then_some(items))
}

/// A JSON list of at most `cap` items, each reduced as it is parsed; one more sets `over`
/// and ends the parse.
struct UpTo<'a> {
    cap: usize,
    over: &'a std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for UpTo<'_> {
    type Value = Vec<Item>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Vec<Item>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UpTo<'_> {
    type Value = Vec<Item>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of DICOM JSON objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Vec<Item>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<Item>()? {
            if out.len() == self.cap {
                self.over.set(true);
                return Err(serde::de::Error::custom(
                    "more items than the command's bound",
                ));
            }
            out.push(item);
        }
        Ok(out)
    }
}

/// The page a QIDO-RS list is asked in (`limit`); an archive may answer fewer, its own cap.
const PAGE: usize = 1000;

/// The whole QIDO-RS list at `url`, asked page by page (`limit`, `offset`): archives cap
/// their answers (Orthanc's LimitFindInstances, dcm4chee's page size), and a series of more
/// instances than one page must come whole. Pages are asked until one is empty (a cap below
/// `limit` answers short pages that are not the last); a page that brings nothing new (an
/// archive that ignores `offset`) ends the list too. Items are told apart by `key` (a UID);
/// at most `max` are taken, and every page is read against the command's `budget`. None
/// when the first page says no such resource.
fn list_all(
    c: &Client,
    url: &str,
    key: fn(&Item) -> &Option<String>,
    max: usize,
    budget: &mut AnswerBudget,
) -> Result<Option<Vec<Item>>> {
    let mut all: Vec<Item> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let page_url = format!("{url}?limit={PAGE}&offset={}", all.len());
        let Some(page) = list(c, &page_url, budget)? else {
            break;
        };
        let before = all.len();
        for item in page {
            if seen.insert(key(&item).clone().unwrap_or_default()) {
                all.push(item);
            }
        }
        if all.len() == before {
            break;
        }
        if all.len() > max {
            bail!("GET {url}: more than {max} items listed, more than a study may hold");
        }
    }
    Ok((!all.is_empty()).then_some(all))
}

/// Fetches the series `series` (its UID or Series Number; the study's one series when
/// None) of study `study` into the folder `dir` (which exists and is empty).
pub fn fetch_series(
    c: &Client,
    study: &str,
    series: Option<&str>,
    dir: &Path,
    quiet: bool,
) -> Result<Fetched> {
    let study = checked_uid(study, "--study")?;
    let root = &c.url.root;
    let url = format!("{root}/studies/{study}/series");
    // One bound on what all of this command's lists may bring.
    let mut budget = AnswerBudget::default();
    let Some(all) = list_all(c, &url, |i| &i.series.0, MAX_INSTANCES, &mut budget)? else {
        bail!("--study {study}: no such study at {} (GET {url})", c.url);
    };
    // Each series: its UID, number and modality, as QIDO-RS gives them.
    let found: Vec<(String, Option<String>, String)> = all
        .into_iter()
        .map(|s| {
            (
                s.series.0.unwrap_or_default(),
                s.number.0,
                s.modality.0.unwrap_or_default(),
            )
        })
        .collect();
    let series_uid = super::pick_series(&found, series, study, &c.url)?;
    let url = format!("{root}/studies/{study}/series/{series_uid}/instances");
    let Some(instances) = list_all(c, &url, |i| &i.sop.0, MAX_INSTANCES, &mut budget)? else {
        bail!(
            "series {series_uid} of study {study} at {}: no instances (GET {url})",
            c.url
        );
    };
    if instances.len() > MAX_INSTANCES {
        bail!(
            "GET {url}: {} instances, more than a study may hold ({MAX_INSTANCES})",
            instances.len()
        );
    }
    let mut sops = Vec::with_capacity(instances.len());
    for i in instances {
        let sop = i.sop.0.unwrap_or_default();
        checked_uid(&sop, &format!("GET {url}: an instance's SOP Instance UID"))?;
        sops.push(sop);
    }
    // The files' names say nothing of the patient: their order in the archive's list (the
    // share orders slices by their headers, as it does a folder's).
    let mut bytes = 0u64;
    for (k, sop) in sops.iter().enumerate() {
        let url = format!("{root}/studies/{study}/series/{series_uid}/instances/{sop}");
        // Any transfer syntax the archive holds (`*`): no transcoding on its side, and the
        // gateway reads what it reads of a folder.
        let r = c.get(
            &url,
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            MAX_INSTANCE,
        )?;
        if r.status != 200 {
            return Err(status_error("GET", &url, &r));
        }
        let file = if multipart::media_type(&r.content_type) == "application/dicom" {
            r.body
        } else {
            let mut parts = multipart::parts(&r.body, &r.content_type, 1)
                .with_context(|| format!("GET {url}"))?;
            if parts.len() != 1 {
                bail!("GET {url}: {} parts, one instance asked", parts.len());
            }
            let p = parts.remove(0);
            let t = multipart::media_type(&p.content_type);
            if !t.is_empty() && t != "application/dicom" {
                bail!("GET {url}: a part of type {t}, not application/dicom");
            }
            p.body.to_vec()
        };
        if file.len() < 132 || &file[128..132] != b"DICM" {
            bail!("GET {url}: the answer is not a DICOM file (no DICM at byte 128)");
        }
        let path = dir.join(format!("instance-{:05}.dcm", k + 1));
        crate::fileio::atomic::write_bytes(&path, &file)?;
        bytes += file.len() as u64;
        if !quiet {
            eprintln!("fetched {}/{}: {url}", k + 1, sops.len());
        }
    }
    Ok(Fetched {
        series_uid,
        instances: sops.len(),
        bytes,
    })
}
