//! Fault injection and the soak, real processes (ignored by default: make faults, make soak).

mod faults;
mod soak;
