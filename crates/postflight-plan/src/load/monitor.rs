//! `monitor:`: the phases a monitor runs through and its window.

use super::*;

impl Ctx<'_> {
    pub(super) fn monitor(&mut self, raw: Spanned<RawMonitor>) -> Option<Monitor> {
        let raw = raw.value;
        let errors_before = self.errors.len();
        let phases = match raw.phases {
            None => Monitor::default_phases(),
            Some(list) => {
                let mut phases = Vec::new();
                for p in list {
                    let loc = p.referenced;
                    let every = self.duration(&p.value.every);
                    let length = self.duration(&p.value.for_);
                    if let (Some(every), Some(length)) = (every, length) {
                        if length < every {
                            self.error(
                                &loc,
                                format!(
                                    "a phase of {} cannot run every {}",
                                    PlanDuration(length),
                                    PlanDuration(every)
                                ),
                            );
                        }
                        phases.push(Phase {
                            every,
                            duration: length,
                        });
                    }
                }
                phases
            }
        };
        if phases.is_empty() && self.errors.len() == errors_before {
            return Some(Monitor {
                phases: Monitor::default_phases(),
                window: DEFAULT_WINDOW,
            });
        }
        let window = match &raw.window {
            Some(w) => self.duration(w)?,
            None => DEFAULT_WINDOW,
        };
        (self.errors.len() == errors_before).then_some(Monitor { phases, window })
    }
}
