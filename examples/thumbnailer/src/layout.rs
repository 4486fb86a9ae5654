//! Where thumbnails go and how big they are: pure functions, no I/O.
//!
//! A thumbnail of size `S` fits in an `S`×`S` box: its longest side is `S`, the other side keeps
//! the original's aspect ratio (rounded to the nearest pixel, at least 1). An image already within
//! the box keeps its own size: thumbnails are never upscaled, so every size exists for every image
//! and a consumer can always fetch `thumbnails/{size}/…`.
//!
//! Keys: `{target prefix}{size}/{key without the source prefix}`, so with the defaults
//! `uploads/2024/cat.jpg` has `thumbnails/128/2024/cat.jpg` and `thumbnails/512/2024/cat.jpg`.
//! The extension stays, and so does the format (see `render`).

/// The dimensions of the `size` thumbnail of a `width`×`height` image.
pub fn fit(width: u32, height: u32, size: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= size || longest == 0 {
        return (width, height);
    }
    let scale = |side: u32| -> u32 {
        // Rounded to nearest in integers: exact for every u32 side, no float drift.
        let scaled =
            (u64::from(side) * u64::from(size) + u64::from(longest) / 2) / u64::from(longest);
        u32::try_from(scaled).unwrap_or(size).max(1)
    };
    if width >= height {
        (size, scale(height))
    } else {
        (scale(width), size)
    }
}

/// Where the thumbnails of one bucket's objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Stripped from the original key (`uploads/`); a key without it is used whole.
    pub source_prefix: String,
    /// Every thumbnail key starts with it (`thumbnails/`).
    pub target_prefix: String,
}

impl Layout {
    /// The key of the `size` thumbnail of the object `key`.
    pub fn thumbnail_key(&self, size: u32, key: &str) -> String {
        let rest = key.strip_prefix(&self.source_prefix).unwrap_or(key);
        format!("{}{size}/{rest}", self.target_prefix)
    }

    /// Whether `key` is itself a thumbnail: a function writing thumbnails of thumbnails would feed
    /// itself through the bucket's notifications forever.
    pub fn is_thumbnail(&self, key: &str) -> bool {
        !self.target_prefix.is_empty() && key.starts_with(&self.target_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_the_longest_side_and_keeps_the_ratio() {
        #[rustfmt::skip]
        let cases = [
            // (width, height, size) -> (width, height)
            ((1600, 900, 128), (128, 72)),
            ((1600, 900, 512), (512, 288)),
            ((300, 800, 128), (48, 128)),
            ((300, 800, 512), (192, 512)),
            ((1000, 1000, 128), (128, 128)),
            // Rounded to nearest: 333 × 128 / 1000 = 42.6.
            ((1000, 333, 128), (128, 43)),
            ((333, 1000, 128), (43, 128)),
            // .5 rounds up: 3 × 128 / 256 = 1.5.
            ((256, 3, 128), (128, 2)),
            // A sliver keeps at least one pixel.
            ((10_000, 1, 128), (128, 1)),
            ((1, 10_000, 512), (1, 512)),
            // Never upscaled: within the box, or exactly its size.
            ((100, 50, 128), (100, 50)),
            ((128, 20, 128), (128, 20)),
            ((512, 512, 512), (512, 512)),
            ((1, 1, 128), (1, 1)),
            ((129, 129, 128), (128, 128)),
            // Largest sides the decoder could hand over do not overflow.
            ((u32::MAX, u32::MAX / 2, 512), (512, 256)),
        ];
        for ((width, height, size), expected) in cases {
            assert_eq!(
                fit(width, height, size),
                expected,
                "{width}x{height} in {size}"
            );
        }
    }

    #[test]
    fn every_fit_stays_in_the_box_and_close_to_the_ratio() {
        // Exhaustive over small images: the invariants a consumer relies on.
        for width in 1..=300u32 {
            for height in 1..=300u32 {
                for size in [1, 7, 64, 128] {
                    let (w, h) = fit(width, height, size);
                    assert!(w >= 1 && h >= 1);
                    assert!(
                        w <= width && h <= height,
                        "upscaled {width}x{height} to {w}x{h}"
                    );
                    assert!(w.max(h) <= size);
                    if width.max(height) > size {
                        assert_eq!(w.max(h), size, "{width}x{height} in {size}");
                        // Within half a pixel (plus the 1-pixel floor) of the exact ratio.
                        let exact_short = f64::from(width.min(height)) * f64::from(size)
                            / f64::from(width.max(height));
                        let short = f64::from(w.min(h));
                        assert!(
                            (short - exact_short).abs() <= 0.5 || short == 1.0,
                            "{width}x{height} in {size}: {w}x{h}"
                        );
                    } else {
                        assert_eq!((w, h), (width, height));
                    }
                }
            }
        }
    }

    fn layout() -> Layout {
        Layout {
            source_prefix: "uploads/".into(),
            target_prefix: "thumbnails/".into(),
        }
    }

    #[test]
    fn keys_keep_the_path_below_the_source_prefix() {
        let layout = layout();
        for (size, key, expected) in [
            (128, "uploads/cat.jpg", "thumbnails/128/cat.jpg"),
            (
                512,
                "uploads/2024/06/cat.JPG",
                "thumbnails/512/2024/06/cat.JPG",
            ),
            (
                128,
                "uploads/red flower.png",
                "thumbnails/128/red flower.png",
            ),
            // Outside the source prefix, the whole key.
            (128, "elsewhere/cat.jpg", "thumbnails/128/elsewhere/cat.jpg"),
            (128, "cat.webp", "thumbnails/128/cat.webp"),
            // Only a leading prefix is stripped.
            (128, "a/uploads/cat.jpg", "thumbnails/128/a/uploads/cat.jpg"),
        ] {
            assert_eq!(layout.thumbnail_key(size, key), expected);
        }
        let flat = Layout {
            source_prefix: String::new(),
            target_prefix: "thumbs-".into(),
        };
        assert_eq!(flat.thumbnail_key(64, "a/b.png"), "thumbs-64/a/b.png");
    }

    #[test]
    fn thumbnails_are_recognised_so_they_never_feed_back() {
        let layout = layout();
        assert!(layout.is_thumbnail("thumbnails/128/cat.jpg"));
        assert!(layout.is_thumbnail(&layout.thumbnail_key(512, "uploads/x.png")));
        assert!(!layout.is_thumbnail("uploads/thumbnails/cat.jpg"));
        assert!(!layout.is_thumbnail("uploads/cat.jpg"));
        let everywhere = Layout {
            source_prefix: String::new(),
            target_prefix: String::new(),
        };
        assert!(!everywhere.is_thumbnail("128/cat.jpg"));
    }
}
