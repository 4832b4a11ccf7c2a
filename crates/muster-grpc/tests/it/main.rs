//! The gRPC front end against a real coordinator on a loopback port (the same port as the HTTP
//! API, h2c): every RPC of `RunnersService`, each error code a caller can hit, the gateway and
//! what it leaves out, server reflection, a store outage, and a foreign (Python) client.

mod outage;
mod python_client;
mod runner_protocol;
mod services;
mod support;
