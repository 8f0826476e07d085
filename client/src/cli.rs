//! The `skald` tool's subcommands (placeholder until the client lands).

/// Subcommands of the `skald` tool other than `server`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Topic administration.
    #[command(subcommand)]
    Topic(TopicCommand),
}

/// `skald topic ...`
#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// List topics.
    List,
}

/// Runs one tool command, printing errors as `skald: ...`.
pub fn main(_command: Command) -> std::process::ExitCode {
    eprintln!("skald: not implemented yet");
    std::process::ExitCode::FAILURE
}
