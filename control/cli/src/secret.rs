//! `shoal secret ...`: Docker's secret verbs, through the local shoald.
//! A secret's bytes go to the managers once, at `create`; nothing shows
//! them again.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use shoal_manager::ops::{Op, OpReply};
use shoal_manager::state::secret::check_secret_size;
use shoal_manager::state::{SecretData, SecretSpec};
use shoal_manager::views::{render_secret_ls, SecretInspect};

use crate::args;
use crate::network::each;
use crate::swarm::op;

/// `shoal secret` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret from a file or from standard input (`-`); prints its id.
    Create {
        /// A label (key=value).
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The secret's name.
        name: String,
        /// The file holding the value, or `-` for standard input.
        file: PathBuf,
    },
    /// List the swarm's secrets.
    #[command(visible_alias = "list")]
    Ls {
        /// Print ids only.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show secrets in detail (JSON, like Docker's; never the value).
    Inspect {
        /// Secret names, ids or id prefixes.
        #[arg(required = true)]
        secrets: Vec<String>,
    },
    /// Remove secrets.
    #[command(visible_alias = "remove")]
    Rm {
        /// Secret names, ids or id prefixes.
        #[arg(required = true)]
        secrets: Vec<String>,
    },
}

/// Reads the value: the file, or standard input for `-`. Stops reading at
/// the size limit (a value that long is refused already), so a huge file is
/// refused without being loaded.
fn read_value(file: &Path) -> anyhow::Result<Vec<u8>> {
    let limit = shoal_manager::state::MAX_SECRET_SIZE as u64;
    let mut data = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut data)
            .context("cannot read the secret from standard input")?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .with_context(|| format!("cannot read the secret file {}", file.display()))?;
    }
    Ok(data)
}

/// Runs a `shoal secret` subcommand against the shoald at `control`.
pub fn run(control: &Path, command: SecretCommand, now: u64) -> anyhow::Result<()> {
    match command {
        SecretCommand::Create { labels, name, file } => {
            let data = read_value(&file)?;
            check_secret_size(data.len())
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let spec = SecretSpec {
                name,
                data: SecretData::new(data),
                labels: args::labels(&labels),
            };
            let OpReply::Id(id) = op(control, &Op::CreateSecret(Box::new(spec)))? else {
                bail!("shoald sent an unexpected answer");
            };
            println!("{id}");
            Ok(())
        }
        SecretCommand::Ls { quiet } => {
            let OpReply::Secrets(mut secrets) = op(control, &Op::Secrets)? else {
                bail!("shoald sent an unexpected answer");
            };
            if quiet {
                secrets.sort_by(|a, b| a.name.cmp(&b.name));
                for s in &secrets {
                    println!("{}", s.id);
                }
            } else {
                print!("{}", render_secret_ls(&secrets, now));
            }
            Ok(())
        }
        SecretCommand::Inspect { secrets } => {
            let (found, errors) = each(&secrets, |key| {
                match op(control, &Op::Secret { key: key.into() })? {
                    OpReply::Secret(s) => Ok(SecretInspect::of(&s)),
                    _ => bail!("shoald sent an unexpected answer"),
                }
            });
            println!("{}", serde_json::to_string_pretty(&found)?);
            errors
        }
        SecretCommand::Rm { secrets } => {
            let (_, errors) = each(&secrets, |key| {
                op(control, &Op::RemoveSecret { key: key.into() })?;
                println!("{key}");
                Ok(())
            });
            errors
        }
    }
}
