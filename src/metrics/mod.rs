//! Measuring: latency histograms and their dumps (the load generator's and, later, the
//! server's per-stage ones).

pub mod hgrm;
