//! File utilities every floor above may use: atomic writes (`atomic`), small files opened
//! once within a size bound (`bounded`) and `.npy` headers read within bounds (`npy`). Nothing here knows what a file holds.
pub mod atomic;
pub mod bounded;
pub mod npy;
