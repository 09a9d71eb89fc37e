//! The data plane: what runs per request and per handshake. It reads the control plane's
//! snapshot ([`plane`]) and nothing else of it: no module here imports the control plane
//! (`tests/planes.rs` checks), and the only wait for the control plane is an onDemand
//! handshake's for a certificate it may order.

pub mod access_log;
pub mod balancer;
pub mod metrics;
pub mod middleware;
pub mod plane;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod tls;
pub mod upstream;
