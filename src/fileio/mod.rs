//! File utilities every floor above may use: atomic writes (`atomic`) and `.npy` headers read
//! within bounds (`npy`). Nothing here knows what a file holds.
pub mod atomic;
pub mod npy;
