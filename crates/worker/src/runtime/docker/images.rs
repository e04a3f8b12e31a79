//! Which images a customer's task may run. A supplier's engine holds images of its own
//! (private builds, secrets baked in), so a job naming an image does not get whatever the
//! engine has under that name. It runs only:
//! - herd's own images (`herd/…`, built by `deploy/images/build.sh`) and the default image;
//! - images the supplier allowed (`herd worker start --allow-image NAME`, `repo` for any of
//!   its tags, or a `prefix*`);
//! - otherwise, the image pulled from its registry for the job, without credentials: what
//!   any stranger could pull, never the supplier's local copy.

pub struct ImagePolicy {
    default_image: String,
    allowed: Vec<String>,
}

impl ImagePolicy {
    pub fn new(default_image: &str, allowed: Vec<String>) -> ImagePolicy {
        ImagePolicy { default_image: default_image.to_owned(), allowed }
    }

    /// Whether the engine's local copy of `image` may run.
    pub fn permits_local(&self, image: &str) -> bool {
        image == self.default_image || image.starts_with("herd/") || self.allowed.iter().any(|p| matches(p, image))
    }
}

fn matches(pattern: &str, image: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        return image.starts_with(prefix);
    }
    if image == pattern {
        return true;
    }
    // A repository without a tag allows all of its tags and digests.
    let has_tag = pattern.rsplit('/').next().is_some_and(|last| last.contains(':')) || pattern.contains('@');
    !has_tag && (image.strip_prefix(pattern).is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@')))
}

/// Why a job's image was refused, with what would make it run.
pub fn refusal(image: &str, pull_error: &str) -> String {
    format!(
        "image {image} may not run here: this machine runs herd's own images, those its supplier allowed \
         (`herd worker start --allow-image`), or an image pulled from its registry for the job, and pulling \
         {image} failed ({pull_error})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herd_allowed_and_pattern_images_run_from_the_local_store_nothing_else() {
        let policy = ImagePolicy::new("herd/base:bookworm", vec!["acme/train".into(), "lab/*".into(), "x:1".into()]);
        for ok in ["herd/base:bookworm", "herd/ray:2.40.0", "acme/train:v2", "acme/train@sha256:ab", "lab/a:b", "x:1"] {
            assert!(policy.permits_local(ok), "{ok}");
        }
        for refused in ["acme/trainer:v2", "supplier/secret:latest", "x:2", "ubuntu", "acme/train-extra"] {
            assert!(!policy.permits_local(refused), "{refused}");
        }
    }
}
