//! The hostile-plugin catalogue: each hostile guest runs beside a healthy recorder over the
//! same stream; the run goes on, the healthy output is unchanged, the fault is reported.

mod support;
