//! Names without randomness. KubeRay names a RayJob's cluster and job id
//! `<rayjob>-<5 random chars>`; a plugin has no randomness, so the 5 chars are a hash of the
//! RayJob's uid, its attempt (finished attempts plus the spec generation, which every
//! suspend/resume by Kueue bumps) and what the name is for. Every retry and every resume
//! gets new names, and replaying a call gives the same ones.

use wasmray_plugin_sdk::names::{FNV_OFFSET, fnv1a, suffix as spelled};

/// What a generated name is for; the two names of one attempt differ, as KubeRay's do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRole {
    Cluster,
    JobId,
}

/// Identifies one attempt of a RayJob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt<'a> {
    pub uid: &'a str,
    /// `status.succeeded + status.failed`: grows with every retry.
    pub finished: i64,
    /// `metadata.generation`: grows with every suspend and resume.
    pub generation: i64,
}

/// `<rayjob>-<5 chars>` for this attempt and role.
pub fn generated_name(rayjob: &str, attempt: Attempt<'_>, role: NameRole) -> String {
    format!("{rayjob}-{}", suffix(attempt, role))
}

fn suffix(attempt: Attempt<'_>, role: NameRole) -> String {
    let role_tag: &[u8] = match role {
        NameRole::Cluster => b"cluster",
        NameRole::JobId => b"job",
    };
    let mut hash = FNV_OFFSET;
    for part in [
        attempt.uid.as_bytes(),
        &attempt.finished.to_le_bytes(),
        &attempt.generation.to_le_bytes(),
        role_tag,
    ] {
        hash = fnv1a(hash, part);
        // A separator keeps ("ab", "c") and ("a", "bc") apart.
        hash = fnv1a(hash, &[0xff]);
    }
    // FNV's low bits mix poorly on short inputs; fold the high half in first.
    spelled(hash ^ (hash >> 32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const ATTEMPT: Attempt<'static> = Attempt {
        uid: "6f1c2a9e-0000-4000-8000-000000000001",
        finished: 0,
        generation: 1,
    };

    #[test]
    fn names_use_kuberays_shape_and_alphabet() {
        let name = generated_name("rayjob-sample", ATTEMPT, NameRole::Cluster);
        let suffix = name.strip_prefix("rayjob-sample-").unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{suffix}"
        );
    }

    #[test]
    fn a_replay_gives_the_same_name() {
        assert_eq!(
            generated_name("j", ATTEMPT, NameRole::JobId),
            generated_name("j", ATTEMPT, NameRole::JobId)
        );
    }

    #[test]
    fn every_retry_resume_role_and_job_gets_another_name() {
        let mut names = BTreeSet::new();
        for uid in ["uid-a", "uid-b"] {
            for finished in 0..20 {
                for generation in 1..20 {
                    for role in [NameRole::Cluster, NameRole::JobId] {
                        let attempt = Attempt {
                            uid,
                            finished,
                            generation,
                        };
                        names.insert(generated_name("j", attempt, role));
                    }
                }
            }
        }
        assert_eq!(names.len(), 2 * 20 * 19 * 2);
    }
}
