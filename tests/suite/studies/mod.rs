//! Studies (src/study/, src/job/): share-study to reconstruct, long studies, exports, derived
//! series, colour studies, real medical images.

mod colour_study;
mod derived_series;
mod medical;
mod study;
mod study_exports;
mod study_long;
