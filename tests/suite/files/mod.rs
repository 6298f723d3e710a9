//! Files at the edge (src/formats/, src/fileio/): containers, sealing, signatures, each file read
//! once, the owner key pin, the audit line.

mod audit_line;
mod formats;
mod owner_pin;
mod read_once;
mod sealed;
mod signing;
