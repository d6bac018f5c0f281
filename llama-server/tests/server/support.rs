//! What several test modules share: the router driven in-process ([`app`]),
//! agents serving `/influxdata` ([`agents`]) and a throwaway InfluxDB
//! ([`influxd`]).

pub mod agents;
pub mod app;
pub mod influxd;
