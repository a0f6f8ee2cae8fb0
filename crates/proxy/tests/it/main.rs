//! End-to-end tests of the proxy: real sockets on 127.0.0.1, tiny hyper backends started by
//! each test. One binary so it links once.

mod client_gone;
mod drain;
mod fixed;
mod forwarding;
mod http1;
mod login;
mod maintenance;
mod namespaces;
mod retry;
mod routing;
mod shutdown;
mod sleeping;
mod streaming;
mod support;
mod switching;
mod timeouts;
mod tls;
mod upgrade;
