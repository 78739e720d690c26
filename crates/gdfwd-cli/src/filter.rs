//! The filter flags `forward`, `backfill` and `audit gaps` share: one `clap::Args` struct, one
//! "Filters" heading in `--help`, and the strings handed as given to
//! [`FindingFilter::apply`], the parser the Lambda uses for its environment variables, so a value
//! means the same on every path (docs/filters.md).

use gdfwd_model::{FilterInput, FindingFilter};

const HEADING: &str = "Filters";

/// Which findings are forwarded. Lists are comma-separated and the flags repeatable; include
/// lists keep findings matching any entry (OR within a kind, AND across kinds), exclude lists
/// drop what they match and win over include. Defaults: archived findings excluded, sample
/// findings included, nothing else filtered. Filtered findings are counted (`filtered`), never
/// claimed or sent; `--log-level info` logs each with its reason.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Forward only findings whose type matches one of these globs (`*` matches any characters,
    /// e.g. `Recon:*`, `*:Kubernetes/*`, `UnauthorizedAccess:EC2/SSHBruteForce`). Every filter
    /// flag takes a comma-separated list and repeats; a finding is forwarded when it matches an
    /// entry of each include flag given and no exclude entry (exclude wins). Filtered findings
    /// are counted (`filtered`), never claimed nor sent; `--log-level info` logs each with its
    /// reason (docs/filters.md).
    #[arg(long, value_name = "GLOBS", help_heading = HEADING)]
    pub include_type: Vec<String>,

    /// Drop findings whose type matches one of these globs.
    #[arg(long, value_name = "GLOBS", help_heading = HEADING)]
    pub exclude_type: Vec<String>,

    /// Forward only findings of these accounts (12-digit ids).
    #[arg(long, value_name = "IDS", help_heading = HEADING)]
    pub include_account: Vec<String>,

    /// Drop findings of these accounts.
    #[arg(long, value_name = "IDS", help_heading = HEADING)]
    pub exclude_account: Vec<String>,

    /// Forward only findings of these regions (the finding's `region`, e.g. `eu-west-1`).
    #[arg(long, value_name = "REGIONS", help_heading = HEADING)]
    pub include_region: Vec<String>,

    /// Drop findings of these regions.
    #[arg(long, value_name = "REGIONS", help_heading = HEADING)]
    pub exclude_region: Vec<String>,

    /// Forward only findings of these resource types (`resource.resourceType`: `Instance`,
    /// `AccessKey`, `S3Bucket`, `EKSCluster`, ...).
    #[arg(long, value_name = "TYPES", help_heading = HEADING)]
    pub include_resource_type: Vec<String>,

    /// Drop findings of these resource types.
    #[arg(long, value_name = "TYPES", help_heading = HEADING)]
    pub exclude_resource_type: Vec<String>,

    /// Forward only findings of at least this severity (0-10; GuardDuty: Low 1-3.9, Medium
    /// 4-6.9, High 7-8.9, Critical 9-10). A finding without a severity is then dropped.
    #[arg(long, value_name = "S", help_heading = HEADING)]
    pub min_severity: Option<String>,

    /// Archived findings (`service.archived`): `exclude` (the default, GuardDuty's "Current"
    /// view and what EventBridge delivers: suppression rules archive findings) or `include`.
    #[arg(
        long,
        value_name = "include|exclude",
        default_value = "exclude",
        help_heading = HEADING
    )]
    pub archived: String,

    /// Sample findings (`service.additionalInfo.sample`, from CreateSampleFindings): `include`
    /// (the default, so the pipeline can be checked with them) or `exclude`.
    #[arg(
        long,
        value_name = "include|exclude",
        default_value = "include",
        help_heading = HEADING
    )]
    pub samples: String,
}

impl FilterArgs {
    /// The filter, or a usage error naming the flag and the value.
    pub fn filter(&self) -> Result<FindingFilter, crate::Usage> {
        let mut filter = FindingFilter::default();
        let lists: [(FilterInput, &[String]); 8] = [
            (FilterInput::IncludeType, &self.include_type),
            (FilterInput::ExcludeType, &self.exclude_type),
            (FilterInput::IncludeAccount, &self.include_account),
            (FilterInput::ExcludeAccount, &self.exclude_account),
            (FilterInput::IncludeRegion, &self.include_region),
            (FilterInput::ExcludeRegion, &self.exclude_region),
            (
                FilterInput::IncludeResourceType,
                &self.include_resource_type,
            ),
            (
                FilterInput::ExcludeResourceType,
                &self.exclude_resource_type,
            ),
        ];
        let singles = [
            (FilterInput::MinSeverity, self.min_severity.as_deref()),
            (FilterInput::Archived, Some(self.archived.as_str())),
            (FilterInput::Samples, Some(self.samples.as_str())),
        ];
        let given = lists
            .iter()
            .flat_map(|(input, values)| values.iter().map(|v| (*input, v.as_str())))
            .chain(singles.into_iter().filter_map(|(i, v)| Some((i, v?))));
        for (input, value) in given {
            filter
                .apply(input, value, &format!("--{}", input.name()))
                .map_err(|e| crate::Usage(e.to_string()))?;
        }
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        filter: FilterArgs,
    }

    fn parse(args: &[&str]) -> Result<FindingFilter, String> {
        let cli = Cli::try_parse_from(std::iter::once("gdfwd").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.filter.filter().map_err(|e| e.0)
    }

    /// Each input of the model is one flag of this struct, under the Filters heading, spelled
    /// as the model names it (which is also how verdicts name it).
    #[test]
    fn every_filter_input_is_a_flag_under_one_heading() {
        let cmd = Cli::command();
        for input in FilterInput::ALL {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(input.name()))
                .unwrap_or_else(|| panic!("no --{}", input.name()));
            assert_eq!(arg.get_help_heading(), Some(HEADING), "--{}", input.name());
        }
        let under_heading = cmd
            .get_arguments()
            .filter(|a| a.get_help_heading() == Some(HEADING))
            .count();
        assert_eq!(under_heading, FilterInput::ALL.len());
    }

    #[test]
    fn lists_repeat_and_split_on_commas() {
        let f = parse(&[
            "--include-type",
            "Recon:*,Backdoor:*",
            "--include-type",
            "*:Kubernetes/*",
            "--exclude-account",
            "111122223333",
            "--min-severity",
            "4",
            "--archived",
            "include",
            "--samples",
            "exclude",
        ])
        .expect("valid");
        assert_eq!(f.types.include, ["*:Kubernetes/*", "Backdoor:*", "Recon:*"]);
        assert_eq!(f.accounts.exclude, ["111122223333"]);
        assert_eq!(f.min_severity, Some(4.0));
        assert_eq!(
            f.to_string(),
            "archived=include;samples=exclude;min-severity=4;include-type=*:Kubernetes/*,Backdoor:*,Recon:*;exclude-account=111122223333"
        );
        assert!(parse(&[]).expect("defaults").is_default());
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, starts) in [
            (
                &["--include-account", "12"][..],
                "--include-account: \"12\"",
            ),
            (&["--exclude-type", "a,,b"][..], "--exclude-type: \"\""),
            (&["--min-severity", "11"][..], "--min-severity: \"11\""),
            (&["--archived", "maybe"][..], "--archived: \"maybe\""),
            (
                &["--include-region", "Mars"][..],
                "--include-region: \"Mars\"",
            ),
        ] {
            let e = parse(args).expect_err("refused");
            assert!(e.starts_with(starts), "{e}");
        }
    }
}
