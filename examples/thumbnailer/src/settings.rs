//! The function's settings, from its environment (a kinetic Service's `env`, or kinetic's own
//! environment, which instances inherit). Read and validated once at start, before listening: a
//! mistake stops the instance with a message naming the variable, instead of failing every event.
//!
//! The S3 connection itself (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, …) is read by the AWS SDK's own configuration loader.

use crate::layout::Layout;

/// Largest thumbnail side accepted in `THUMBNAIL_SIZES`.
const MAX_SIZE: u32 = 8192;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `PORT`: where to listen (kinetic gives every instance its own).
    pub port: u16,
    /// `BIND_ADDRESS`: the address to listen on; 127.0.0.1 by default, `0.0.0.0` in the
    /// function's container image (requests come through the engine's published port).
    pub bind: std::net::IpAddr,
    /// `THUMBNAIL_SIZES`: longest sides of the thumbnails, ascending, without repeats.
    pub sizes: Vec<u32>,
    /// `THUMBNAIL_SOURCE_PREFIX` and `THUMBNAIL_TARGET_PREFIX`.
    pub layout: Layout,
    /// `THUMBNAIL_MAX_PIXELS`: larger images are refused before they are decoded.
    pub max_pixels: u64,
    /// `THUMBNAIL_MAX_OBJECT_BYTES`: larger objects are refused before they are downloaded.
    pub max_object_bytes: u64,
    /// `THUMBNAIL_JPEG_QUALITY`: 1–100.
    pub jpeg_quality: u8,
    /// `THUMBNAIL_WORKERS`: images decoded and resized at once (each holds up to `max_pixels`
    /// decoded pixels); default: the CPUs available.
    pub workers: usize,
    /// `THUMBNAIL_FORCE_PATH_STYLE`: address buckets as `endpoint/bucket` (MinIO, moto, most
    /// S3-compatible stores).
    pub force_path_style: bool,
    /// `K_SERVICE` (set by kinetic): the reply event's source is `/services/{service}`.
    pub service: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}={value:?}: {problem}")]
pub struct SettingsError {
    variable: &'static str,
    value: String,
    problem: String,
}

impl Settings {
    /// Reads the settings through `env` (the process environment in `main`, a table in tests).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let read = |variable: &'static str| env(variable).map(|value| (variable, value));
        let port = match read("PORT") {
            Some((variable, value)) => value.parse().map_err(|_| SettingsError {
                variable,
                value,
                problem: "must be a port number".into(),
            })?,
            None => 8080,
        };
        let bind = match read("BIND_ADDRESS") {
            Some((variable, value)) => value.parse().map_err(|_| SettingsError {
                variable,
                value,
                problem: "must be an IP address, such as 127.0.0.1 or 0.0.0.0".into(),
            })?,
            None => std::net::IpAddr::from([127, 0, 0, 1]),
        };
        let sizes = match read("THUMBNAIL_SIZES") {
            Some((variable, value)) => parse_sizes(&value).map_err(|problem| SettingsError {
                variable,
                value,
                problem,
            })?,
            None => vec![128, 512],
        };
        let source_prefix = env("THUMBNAIL_SOURCE_PREFIX").unwrap_or_else(|| "uploads/".into());
        let target_prefix = env("THUMBNAIL_TARGET_PREFIX").unwrap_or_else(|| "thumbnails/".into());
        if target_prefix.is_empty() {
            return Err(SettingsError {
                variable: "THUMBNAIL_TARGET_PREFIX",
                value: target_prefix,
                problem: "must not be empty: thumbnails need a prefix of their own so they are \
                          never taken for uploads"
                    .into(),
            });
        }
        if !source_prefix.is_empty() && target_prefix.starts_with(&source_prefix) {
            return Err(SettingsError {
                variable: "THUMBNAIL_TARGET_PREFIX",
                value: target_prefix,
                problem: format!(
                    "is inside THUMBNAIL_SOURCE_PREFIX ({source_prefix:?}): every thumbnail would \
                     look like a new upload"
                ),
            });
        }
        let max_pixels = number(&read, "THUMBNAIL_MAX_PIXELS", 40_000_000, 1..=1_000_000_000)?;
        let max_object_bytes = number(
            &read,
            "THUMBNAIL_MAX_OBJECT_BYTES",
            64 * 1024 * 1024,
            1..=4 * 1024 * 1024 * 1024,
        )?;
        let jpeg_quality = number(&read, "THUMBNAIL_JPEG_QUALITY", 85, 1..=100)? as u8;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let workers = number(&read, "THUMBNAIL_WORKERS", cpus, 1..=1024)? as usize;
        let force_path_style = match read("THUMBNAIL_FORCE_PATH_STYLE") {
            None => false,
            Some((variable, value)) => match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                _ => {
                    return Err(SettingsError {
                        variable,
                        value,
                        problem: "must be true or false".into(),
                    });
                }
            },
        };
        Ok(Settings {
            port,
            bind,
            sizes,
            layout: Layout {
                source_prefix,
                target_prefix,
            },
            max_pixels,
            max_object_bytes,
            jpeg_quality,
            workers,
            force_path_style,
            service: env("K_SERVICE").unwrap_or_else(|| "thumbnailer".into()),
        })
    }
}

fn number(
    read: &impl Fn(&'static str) -> Option<(&'static str, String)>,
    variable: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, SettingsError> {
    let Some((variable, value)) = read(variable) else {
        return Ok(default);
    };
    match value.trim().replace('_', "").parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(SettingsError {
            variable,
            value,
            problem: format!(
                "must be a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        }),
    }
}

/// `128,512` → `[128, 512]`: sorted, repeats dropped.
fn parse_sizes(text: &str) -> Result<Vec<u32>, String> {
    let mut sizes = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let size: u32 = part
            .parse()
            .ok()
            .filter(|size| (1..=MAX_SIZE).contains(size))
            .ok_or_else(|| {
                format!("`{part}` is not a size: write pixels from 1 to {MAX_SIZE}, e.g. 128,512")
            })?;
        sizes.push(size);
    }
    sizes.sort_unstable();
    sizes.dedup();
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.port, 8080);
        assert_eq!(settings.sizes, [128, 512]);
        assert_eq!(settings.layout.source_prefix, "uploads/");
        assert_eq!(settings.layout.target_prefix, "thumbnails/");
        assert_eq!(settings.max_pixels, 40_000_000);
        assert_eq!(settings.max_object_bytes, 64 * 1024 * 1024);
        assert_eq!(settings.jpeg_quality, 85);
        assert!(settings.workers >= 1);
        assert!(!settings.force_path_style);
        assert_eq!(settings.service, "thumbnailer");
    }

    #[test]
    fn reads_every_variable() {
        let settings = settings(&[
            ("PORT", "9001"),
            ("BIND_ADDRESS", "0.0.0.0"),
            ("THUMBNAIL_SIZES", " 512, 64,128,64 "),
            ("THUMBNAIL_SOURCE_PREFIX", "in/"),
            ("THUMBNAIL_TARGET_PREFIX", "out/"),
            ("THUMBNAIL_MAX_PIXELS", "1_000_000"),
            ("THUMBNAIL_MAX_OBJECT_BYTES", "1024"),
            ("THUMBNAIL_JPEG_QUALITY", "70"),
            ("THUMBNAIL_WORKERS", "3"),
            ("THUMBNAIL_FORCE_PATH_STYLE", "TRUE"),
            ("K_SERVICE", "thumbs"),
        ])
        .unwrap();
        assert_eq!(settings.port, 9001);
        assert_eq!(settings.bind, std::net::IpAddr::from([0, 0, 0, 0]));
        assert_eq!(settings.sizes, [64, 128, 512]);
        assert_eq!(
            settings.layout.thumbnail_key(64, "in/a.png"),
            "out/64/a.png"
        );
        assert_eq!(settings.max_pixels, 1_000_000);
        assert_eq!(settings.max_object_bytes, 1024);
        assert_eq!(settings.jpeg_quality, 70);
        assert_eq!(settings.workers, 3);
        assert!(settings.force_path_style);
        assert_eq!(settings.service, "thumbs");
    }

    #[test]
    fn mistakes_name_the_variable() {
        for (vars, variable, says) in [
            (vec![("PORT", "http")], "PORT", "port number"),
            (
                vec![("BIND_ADDRESS", "localhost")],
                "BIND_ADDRESS",
                "must be an IP address",
            ),
            (
                vec![("THUMBNAIL_SIZES", "128,big")],
                "THUMBNAIL_SIZES",
                "`big` is not a size",
            ),
            (
                vec![("THUMBNAIL_SIZES", "")],
                "THUMBNAIL_SIZES",
                "`` is not a size",
            ),
            (
                vec![("THUMBNAIL_SIZES", "0")],
                "THUMBNAIL_SIZES",
                "from 1 to 8192",
            ),
            (
                vec![("THUMBNAIL_SIZES", "9000")],
                "THUMBNAIL_SIZES",
                "from 1 to 8192",
            ),
            (
                vec![("THUMBNAIL_TARGET_PREFIX", "")],
                "THUMBNAIL_TARGET_PREFIX",
                "must not be empty",
            ),
            (
                vec![("THUMBNAIL_TARGET_PREFIX", "uploads/thumbs/")],
                "THUMBNAIL_TARGET_PREFIX",
                "inside THUMBNAIL_SOURCE_PREFIX",
            ),
            (
                vec![("THUMBNAIL_MAX_PIXELS", "0")],
                "THUMBNAIL_MAX_PIXELS",
                "whole number",
            ),
            (
                vec![("THUMBNAIL_JPEG_QUALITY", "101")],
                "THUMBNAIL_JPEG_QUALITY",
                "1 to 100",
            ),
            (
                vec![("THUMBNAIL_WORKERS", "-1")],
                "THUMBNAIL_WORKERS",
                "whole number",
            ),
            (
                vec![("THUMBNAIL_FORCE_PATH_STYLE", "maybe")],
                "THUMBNAIL_FORCE_PATH_STYLE",
                "true or false",
            ),
        ] {
            let error = settings(&vars).unwrap_err().to_string();
            assert!(error.starts_with(variable), "{error}");
            assert!(error.contains(says), "{error}");
        }
    }
}
