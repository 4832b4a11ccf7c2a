//! muster-service driven directly, as a front end would drive it but without one: the
//! front-end parity scenarios (`muster_test_support::parity`) against the `Coordinator`'s own
//! methods, and the checks that keep the layering true.

mod layering;
mod parity;
