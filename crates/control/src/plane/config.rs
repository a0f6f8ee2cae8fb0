//! Configuration set through Turnout: values at the app, tier and environment levels (plain
//! or secret, secrets sealed by the vault), resolved for an environment with the app file's
//! `[env]` layers by one rule, and the snapshot each release ran with.
