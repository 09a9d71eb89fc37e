//! Observability, between the planes: what a replica shows of itself. It reads the data
//! plane's snapshot and request metrics and the control plane's events, and answers the data
//! plane's internal endpoints ([`crate::data::proxy::internal`]).
//! - [`control`]: the control plane's numbers (reloads, orders, the store), fed by the event bus.
//! - [`prometheus`]: the `/metrics` exposition, Traefik's families and Pylon's own.

pub mod control;
pub mod prometheus;
