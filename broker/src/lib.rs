//! skald-broker: the Kafka API server (placeholder).

use std::path::Path;

/// The server's configuration, from Kafka's property names.
#[derive(Debug, Clone)]
pub struct ServerConfig {}

impl ServerConfig {
    /// Loads the embedded defaults, then the file, then the overrides.
    pub fn load(_file: Option<&Path>, _overrides: &[String]) -> Result<Self, String> {
        Ok(ServerConfig {})
    }
}

/// Runs the server until SIGTERM or Ctrl-C.
pub fn run_until_signal(_config: ServerConfig) -> Result<(), String> {
    Err("not implemented".into())
}
