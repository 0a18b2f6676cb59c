//! `policy:`: required regions, quorum, probes per region, warnings allowed.

use super::*;

impl Ctx<'_> {
    pub(super) fn policy(&mut self, raw: Option<RawPolicy>) -> Option<Policy> {
        let Some(raw) = raw else {
            return Some(Policy::default());
        };
        let errors_before = self.errors.len();
        let max_warnings = raw.max_warnings.map_or(DEFAULT_MAX_WARNINGS, |m| m.value);
        let mut regions: Vec<String> = Vec::new();
        if let Some(list) = raw.regions {
            for r in list.value {
                let Some(name) = self.text(&r) else { continue };
                if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',') {
                    self.error(&r.referenced, format!("`{name}` is not a region name"));
                } else if regions.contains(&name) {
                    self.error(&r.referenced, format!("region `{name}` is listed twice"));
                } else {
                    regions.push(name);
                }
            }
            if regions.is_empty() && self.errors.len() == errors_before {
                self.error(&list.referenced, "`regions` is empty: list regions or leave it out for every connected probe's region");
            }
        }
        let quorum = match raw.quorum {
            None => Quorum::Majority,
            Some(q) => match &q.value {
                QuorumSpec::Word(w) => match w.as_str() {
                    "any" => Quorum::Any,
                    "majority" => Quorum::Majority,
                    "all" => Quorum::All,
                    other => {
                        self.error(&q.referenced, format!("unknown quorum `{other}`: expected any, majority, all or a number of regions"));
                        Quorum::Majority
                    }
                },
                QuorumSpec::Count(0) => {
                    self.error(&q.referenced, "quorum must be at least 1 region");
                    Quorum::Any
                }
                QuorumSpec::Count(n) => {
                    let n = u32::try_from(*n).unwrap_or(u32::MAX);
                    if !regions.is_empty() && n as usize > regions.len() {
                        self.error(
                            &q.referenced,
                            format!("quorum {n} is more than the {} required regions, so no check could ever fail", regions.len()),
                        );
                    }
                    Quorum::Count(n)
                }
            },
        };
        let probes_per_region = match raw.probes_per_region {
            None => ProbesPerRegion::One,
            Some(p) => match &p.value {
                PerRegionSpec::Count(1) => ProbesPerRegion::One,
                PerRegionSpec::Word(w) if w == "all" => ProbesPerRegion::All,
                _ => {
                    self.error(&p.referenced, "probes_per_region is 1 or all");
                    ProbesPerRegion::One
                }
            },
        };
        (self.errors.len() == errors_before).then_some(Policy {
            max_warnings,
            regions,
            quorum,
            probes_per_region,
        })
    }
}
