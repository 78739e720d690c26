//! `gdfwd doctor`: the two outputs of `gdfwd_doctor`'s [`Report`]: a table for people (fits 80
//! columns for any number of accounts: healthy accounts are one line, only gaps are expanded) and
//! one JSON object for machines: the report as it serialises (`{"accounts", "regions", "checks",
//! "gaps"}`, the keys `gdfwd-doctor`'s tests hold it to). A checklist has no rows to put in CSV,
//! so doctor offers [`FORMATS`] only.

use std::collections::BTreeMap;

use gdfwd_doctor::{Report, Status};

use super::OutputFormat;

/// The formats doctor's report has.
pub const FORMATS: [OutputFormat; 2] = [OutputFormat::Table, OutputFormat::Json];

/// The report in `format`, one of [`FORMATS`] (`gdfwd doctor` refuses `--output csv` as a usage
/// error before it reads anything, so CSV never reaches here; were it to, it gets the JSON).
pub fn report(report: &Report, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => table(report),
        OutputFormat::Json | OutputFormat::Csv => super::json(&serde_json::json!(report)),
    }
}

/// `--output table`.
fn table(report: &Report) -> String {
    let mut out = format!(
        "gdfwd doctor: {} accounts x {} regions (home {})\n\n",
        report.accounts,
        report.regions.len(),
        report.home_region
    );
    out.push_str(&checks(report));
    out.push('\n');
    out.push_str(&accounts(report));
    if report.gaps.is_empty() {
        out.push_str("\nNo gaps: every account and region reaches the forwarder.\n");
        return out;
    }
    out.push_str(&format!("\nGAPS ({})\n", report.gaps.len()));
    for (i, g) in report.gaps.iter().enumerate() {
        let mut place: Vec<&str> = Vec::new();
        if let Some(a) = &g.account {
            place.push(a);
        }
        if let Some(r) = &g.region {
            place.push(r);
        }
        let place = if place.is_empty() {
            String::new()
        } else {
            format!(" {}", place.join(" "))
        };
        out.push_str(&format!("{:>3}. [{}]{place}\n", i + 1, g.check));
        out.push_str(&wrap(&g.detail, "     ", 80, ""));
        // Continued lines end in ` \` so a wrapped command still pastes into a shell.
        out.push_str(&wrap(&format!("fix: {}", g.fix), "     ", 80, " \\"));
    }
    out
}

/// One line per check name: its worst status and where it is not ok.
fn checks(report: &Report) -> String {
    let mut by_name: Vec<(&str, Status, Vec<String>)> = Vec::new();
    for c in &report.checks {
        let idx = match by_name.iter().position(|(n, _, _)| *n == c.check) {
            Some(i) => i,
            None => {
                by_name.push((c.check, Status::Ok, Vec::new()));
                by_name.len() - 1
            }
        };
        let entry = &mut by_name[idx];
        entry.1 = entry.1.max(c.status);
        if let (Some(region), false) = (&c.region, c.status == Status::Ok) {
            entry.2.push(format!("{region}: {}", c.status.as_str()));
        }
    }
    let mut out = String::from("CHECKS\n");
    for (name, status, places) in by_name {
        let line = format!(
            "  {:<8} {:<26} {}",
            status.as_str(),
            name,
            places.join(", ")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Accounts: the healthy ones counted, the others with their gaps by region.
fn accounts(report: &Report) -> String {
    let mut per_account: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for g in &report.gaps {
        if let Some(a) = &g.account {
            let place = g.region.as_deref().unwrap_or("all regions");
            per_account
                .entry(a)
                .or_default()
                .push(format!("{place}: {}", g.check));
        }
    }
    let healthy = report.accounts.saturating_sub(per_account.len());
    let mut out = format!("ACCOUNTS ({})\n", report.accounts);
    out.push_str(&format!(
        "  {healthy} account(s) covered in every region checked\n"
    ));
    for (account, places) in per_account {
        let name = report
            .account_names
            .get(account)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        out.push_str(&wrap(
            &format!("{account}{name}: {}", places.join("; ")),
            "  ",
            80,
            "",
        ));
    }
    out
}

/// Word-wraps `text` at `width`, every line starting with `indent` (continuations two deeper),
/// each line but the last ending in `tail`.
fn wrap(text: &str, indent: &str, width: usize, tail: &str) -> String {
    let mut out = String::new();
    let mut line = indent.to_owned();
    let cont = format!("{indent}  ");
    let mut fresh = true;
    let room = width.saturating_sub(tail.chars().count());
    for word in text.split_whitespace() {
        if !fresh && line.chars().count() + 1 + word.chars().count() > room {
            out.push_str(&line);
            out.push_str(tail);
            out.push('\n');
            line = cont.clone();
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_lines_within_width_unless_a_word_is_longer() {
        let text = "aws guardduty create-members --detector-id 12abc34d567e8fa901bc2d34e56789f0 --account-details AccountId=111122223333,Email=a@example.com --region eu-west-1";
        let wrapped = wrap(text, "     ", 80, " \\");
        assert!(wrapped.lines().count() > 1, "{wrapped}");
        let unwrapped: String = wrapped
            .lines()
            .map(|l| l.trim().trim_end_matches('\\').trim())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(unwrapped, text);
        for line in wrapped.lines() {
            assert!(
                line.chars().count() <= 80 || !line.trim().contains(' '),
                "{line}"
            );
        }
    }
}
