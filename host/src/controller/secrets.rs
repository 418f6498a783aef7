//! Secrets whose content must be random, which a plugin cannot make (it has no randomness,
//! so that its decisions replay): a plugin asks for them in its answer
//! (`generated-secrets`), and the host creates each once, owned by its parent, and never
//! changes it afterwards. The plugin refers to it by name (e.g. a token-auth RayCluster's
//! pods read `auth_token` from Secret `<cluster>`).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

use super::parent_state::ParentStates;
use super::wit::GeneratedSecret;

/// Remembers (in each parent's state) which Secrets are known to exist, so that each costs
/// one read per parent and process, not one per reconcile.
#[derive(Debug)]
pub struct SecretsEnsured {
    states: Arc<ParentStates>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no randomness for Secret {name}: {source}")]
    Random {
        name: String,
        #[source]
        source: getrandom::Error,
    },
    #[error("reading Secret {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating Secret {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl SecretError {
    /// Whether the API server could not be reached.
    pub fn unreachable(&self) -> bool {
        match self {
            SecretError::Random { .. } => false,
            SecretError::Read { source, .. } | SecretError::Create { source, .. } => {
                super::apply::is_unreachable(source)
            }
        }
    }
}

impl SecretsEnsured {
    pub fn new(states: Arc<ParentStates>) -> Self {
        SecretsEnsured { states }
    }

    /// Makes sure each wanted Secret exists; returns how many it created.
    pub async fn ensure(
        &self,
        api: &Api<Secret>,
        parent_uid: &str,
        owner: &OwnerReference,
        wanted: &[GeneratedSecret],
    ) -> Result<usize, SecretError> {
        let mut created = 0;
        for secret in wanted {
            let known = self.states.with(parent_uid, |state| {
                state.secrets_known.contains(&secret.name)
            });
            if known {
                continue;
            }
            let name = secret.name.clone();
            let exists = api
                .get_opt(&name)
                .await
                .map_err(|source| SecretError::Read {
                    name: name.clone(),
                    source,
                })?
                .is_some();
            if !exists {
                let object = random_secret(secret, owner)?;
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => created += 1,
                    // Another writer (a previous leader) made it first: keep theirs.
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(source) => return Err(SecretError::Create { name, source }),
                }
            }
            self.states.with(parent_uid, |state| {
                state.secrets_known.insert(secret.name.clone())
            });
        }
        Ok(created)
    }
}

fn random_secret(secret: &GeneratedSecret, owner: &OwnerReference) -> Result<Secret, SecretError> {
    // The plan bounds the size (1 to 1024 bytes).
    let mut bytes = vec![0u8; usize::try_from(secret.random_bytes).unwrap_or(0)];
    getrandom::fill(&mut bytes).map_err(|source| SecretError::Random {
        name: secret.name.clone(),
        source,
    })?;
    let value = base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(secret.name.clone()),
            labels: Some(secret.labels.iter().cloned().collect()),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(secret.key.clone(), value)])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_secret_gets_fresh_randomness() {
        let wanted = GeneratedSecret {
            name: "c".into(),
            key: "auth_token".into(),
            random_bytes: 32,
            labels: vec![("ray.io/cluster".into(), "c".into())],
        };
        let owner = OwnerReference::default();
        let first = random_secret(&wanted, &owner).unwrap();
        let second = random_secret(&wanted, &owner).unwrap();
        let token = |secret: &Secret| secret.string_data.as_ref().unwrap()["auth_token"].clone();
        assert_ne!(token(&first), token(&second));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token(&first))
            .unwrap();
        assert_eq!(decoded.len(), 32);
        assert_eq!(first.metadata.labels.unwrap()["ray.io/cluster"], "c");
    }
}
