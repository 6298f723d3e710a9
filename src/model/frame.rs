//! What surrounds a CNN's convolution stack: pixel-unshuffle of the image into sub-images,
//! the noise-level map as an extra input channel, and pixel-shuffle of the output back
//! (FFDNet, Zhang et al., TIP 2018). DnCNN has the identity frame.
//!
//! Every step is a public rearrangement (a permutation, or a copy of the last row/column for
//! an odd size), so one generic function serves the float forward, the fixed-point oracle
//! and each server's shares, which apply it locally: no traffic, nothing revealed.
//!
//! A colour model (FFDNet's colour files) takes C = 3 colour planes: each plane is
//! unshuffled into its r*r sub-images, colour-major (channel = colour * r*r + sub-image), and
//! the noise map follows: ONE channel shared by the colours, as the authors' colour model has
//! it, or one per colour (R, G, B, after the sub-images: a sigma per plane; a model trained
//! in another layout, such as the IPOL PyTorch FFDNet's maps-first one, must have its
//! first and last layers' channels permuted when converted, docs/cnn.md). The colour count and the map count live beside the frame (in the model and its
//! plan, implied by the first and last layers' shapes, so a file's bytes carry no field for
//! them), and a colour image travels as its planes one after another (C x h x w values, or a
//! (C*h) x w array); its map as its channels one after another.

use serde::{Deserialize, Serialize};

/// Largest pixel-unshuffle factor accepted.
pub const MAX_UNSHUFFLE: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Pixel-unshuffle factor r: the stack runs on r*r sub-images of ceil(h/r) x ceil(w/r).
    /// 1 for none (DnCNN), 2 for FFDNet.
    pub unshuffle: usize,
    /// One more input channel, after the sub-images, carries the noise-level map
    /// (sigma/255 at sub-image resolution).
    pub noise_map: bool,
}

impl Default for Frame {
    fn default() -> Self {
        Frame::PLAIN
    }
}

impl Frame {
    /// The whole image in, the whole image out (DnCNN).
    pub const PLAIN: Frame = Frame {
        unshuffle: 1,
        noise_map: false,
    };
    /// FFDNet: four half-resolution sub-images and the noise map in, four sub-images out.
    pub const FFDNET: Frame = Frame {
        unshuffle: 2,
        noise_map: true,
    };

    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_UNSHUFFLE).contains(&self.unshuffle) {
            return Err(format!(
                "pixel-unshuffle factor {} (1 to {MAX_UNSHUFFLE} supported)",
                self.unshuffle
            ));
        }
        Ok(())
    }

    /// For each of the frame's sub-images, the channel PyTorch's `pixel_unshuffle` gives it
    /// (row offset times r plus column offset; the frame counts column offsets first).
    pub fn torch_order(&self) -> Vec<usize> {
        let r = self.unshuffle;
        (0..r * r).map(|q| (q % r) * r + q / r).collect()
    }

    /// Sub-images the image becomes (r*r), which is also the stack's output channels.
    pub fn sub_images(&self) -> usize {
        self.unshuffle * self.unshuffle
    }

    /// Input channels of the first convolution.
    pub fn in_channels(&self) -> usize {
        self.in_channels_of(1)
    }

    /// Input channels of the first convolution for an image of `colours` planes and one
    /// noise-map channel (when the frame has a map).
    pub fn in_channels_of(&self, colours: usize) -> usize {
        colours * self.sub_images() + self.noise_map as usize
    }

    /// Noise-map channels a first convolution of `cin` inputs implies for `colours` planes:
    /// 0 without a map; with one, 1 (shared by the planes) or `colours` (one per plane).
    /// None when `cin` fits neither.
    pub fn map_channels_of(&self, colours: usize, cin: usize) -> Option<usize> {
        let maps = cin.checked_sub(colours * self.sub_images())?;
        let fits = if self.noise_map {
            maps == 1 || maps == colours
        } else {
            maps == 0
        };
        fits.then_some(maps)
    }

    /// Output channels of the stack for an image of `colours` planes.
    pub fn out_channels(&self, colours: usize) -> usize {
        colours * self.sub_images()
    }

    /// Height and width of the maps the convolutions run on, for an h x w image.
    pub fn stack_dims(&self, h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(self.unshuffle), w.div_ceil(self.unshuffle))
    }

    /// Values of one noise-map channel for an h x w image (0 without a map).
    pub fn map_len(&self, h: usize, w: usize) -> usize {
        let (sh, sw) = self.stack_dims(h, w);
        if self.noise_map {
            sh * sw
        } else {
            0
        }
    }

    /// The stack's input: the image (h x w, row-major) padded by repeating its last
    /// row/column to a multiple of r, unshuffled into r*r channels, then the map's values
    /// (`map_len` of them) as the last channel. Sub-image i takes the pixels at row offset
    /// i mod r and column offset i div r of each r x r cell: the FFDNet authors' order,
    /// (dy, dx) = (0,0), (1,0), (0,1), (1,1) for r = 2.
    pub fn stack_input<T: Copy>(&self, image: &[T], map: &[T], h: usize, w: usize) -> Vec<T> {
        self.stack_input_of(1, image, map, h, w)
    }

    /// [`Frame::stack_input`] of an image of `colours` planes (each h x w, one after
    /// another): each plane's r*r sub-images in turn, then the map's channels (one, or one
    /// per plane).
    pub fn stack_input_of<T: Copy>(
        &self,
        colours: usize,
        image: &[T],
        map: &[T],
        h: usize,
        w: usize,
    ) -> Vec<T> {
        assert_eq!(image.len(), colours * h * w, "colours x h x w values");
        let maps = match self.map_len(h, w) {
            0 => 0,
            n => map.len() / n,
        };
        assert!(
            map.len() == maps * self.map_len(h, w)
                && self
                    .map_channels_of(colours, colours * self.sub_images() + maps)
                    .is_some(),
            "map channels of map_len values each"
        );
        let r = self.unshuffle;
        let (sh, sw) = self.stack_dims(h, w);
        let mut out = Vec::with_capacity(self.in_channels_of(colours) * sh * sw);
        for plane in image.chunks_exact(h * w) {
            for dx in 0..r {
                for dy in 0..r {
                    for y in 0..sh {
                        let row = &plane[(y * r + dy).min(h - 1) * w..][..w];
                        out.extend((0..sw).map(|x| row[(x * r + dx).min(w - 1)]));
                    }
                }
            }
        }
        out.extend_from_slice(map);
        out
    }

    /// The image from the stack's output (r*r channels of the stack's size): pixel-shuffle,
    /// then crop to h x w (what padding added is dropped).
    pub fn image_from_stack<T: Copy>(&self, out: &[T], h: usize, w: usize) -> Vec<T> {
        self.image_from_stack_of(1, out, h, w)
    }

    /// [`Frame::image_from_stack`] of `colours` planes' sub-images (colour-major): the
    /// planes, one after another.
    pub fn image_from_stack_of<T: Copy>(
        &self,
        colours: usize,
        out: &[T],
        h: usize,
        w: usize,
    ) -> Vec<T> {
        let r = self.unshuffle;
        let (sh, sw) = self.stack_dims(h, w);
        assert_eq!(
            out.len(),
            self.out_channels(colours) * sh * sw,
            "colours x r*r output channels"
        );
        let mut img = Vec::with_capacity(colours * h * w);
        for plane in out.chunks_exact(self.sub_images() * sh * sw) {
            for y in 0..h {
                for x in 0..w {
                    let ch = (y % r) + r * (x % r);
                    img.push(plane[(ch * sh + y / r) * sw + x / r]);
                }
            }
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_frame_is_the_identity() {
        let img: Vec<u32> = (0..35).collect();
        let f = Frame::PLAIN;
        let s = f.stack_input(&img, &[], 5, 7);
        assert_eq!(s, img);
        assert_eq!(f.image_from_stack(&s, 5, 7), img);
    }

    #[test]
    fn ffdnet_order_padding_and_inverse() {
        // 3 x 3 image: pixel (y, x) = 10 y + x; padded to 4 x 4 by repetition.
        let img: Vec<u32> = (0..3)
            .flat_map(|y| (0..3).map(move |x| 10 * y + x))
            .collect();
        let f = Frame::FFDNET;
        assert_eq!(f.stack_dims(3, 3), (2, 2));
        let map = [100, 101, 102, 103];
        let s = f.stack_input(&img, &map, 3, 3);
        // Channel (dy, dx) = (0,0): rows 0, 2 and columns 0, 2.
        assert_eq!(&s[0..4], &[0, 2, 20, 22]);
        // (1,0): rows 1, 3->2 (repeated), columns 0, 2.
        assert_eq!(&s[4..8], &[10, 12, 20, 22]);
        // (0,1): rows 0, 2, columns 1, 3->2.
        assert_eq!(&s[8..12], &[1, 2, 21, 22]);
        // (1,1).
        assert_eq!(&s[12..16], &[11, 12, 21, 22]);
        assert_eq!(&s[16..], &map);
        assert_eq!(f.image_from_stack(&s[..16], 3, 3), img);
    }

    /// Three planes: channel = colour * 4 + sub-image, one map channel after them all.
    #[test]
    fn colour_planes_are_colour_major() {
        let f = Frame::FFDNET;
        // 2 x 2 planes: pixel (c, y, x) = 100 c + 10 y + x.
        let img: Vec<u32> = (0..3)
            .flat_map(|c| (0..2).flat_map(move |y| (0..2).map(move |x| 100 * c + 10 * y + x)))
            .collect();
        let s = f.stack_input_of(3, &img, &[7], 2, 2);
        assert_eq!(s.len(), f.in_channels_of(3));
        assert_eq!(f.in_channels_of(3), 13);
        assert_eq!(&s[..4], &[0, 10, 1, 11]);
        assert_eq!(&s[4..8], &[100, 110, 101, 111]);
        assert_eq!(&s[8..12], &[200, 210, 201, 211]);
        assert_eq!(s[12], 7);
        assert_eq!(f.image_from_stack_of(3, &s[..12], 2, 2), img);
        for (h, w) in [(3, 5), (4, 4), (1, 7)] {
            let img: Vec<usize> = (0..3 * h * w).collect();
            let s = f.stack_input_of(3, &img, &vec![0; f.map_len(h, w)], h, w);
            let n = f.out_channels(3) * f.map_len(h, w);
            assert_eq!(f.image_from_stack_of(3, &s[..n], h, w), img, "{h} x {w}");
        }
    }

    /// A map per colour: three map channels after the twelve sub-images, R's first.
    #[test]
    fn a_map_per_colour_follows_the_planes() {
        let f = Frame::FFDNET;
        assert_eq!(f.map_channels_of(3, 13), Some(1));
        assert_eq!(f.map_channels_of(3, 15), Some(3));
        assert_eq!(f.map_channels_of(3, 14), None);
        assert_eq!(f.map_channels_of(3, 12), None);
        assert_eq!(f.map_channels_of(1, 5), Some(1));
        assert_eq!(Frame::PLAIN.map_channels_of(1, 1), Some(0));
        assert_eq!(Frame::PLAIN.map_channels_of(1, 2), None);
        let img: Vec<u32> = (0..12).collect();
        let s = f.stack_input_of(3, &img, &[70, 71, 72], 2, 2);
        assert_eq!(s.len(), 15);
        assert_eq!(&s[12..], &[70, 71, 72]);
        assert_eq!(f.image_from_stack_of(3, &s[..12], 2, 2), img);
    }

    #[test]
    #[should_panic(expected = "map channels")]
    fn two_maps_for_three_planes_are_refused() {
        Frame::FFDNET.stack_input_of(3, &[0u32; 12], &[1, 2], 2, 2);
    }

    #[test]
    fn shuffle_inverts_unshuffle_on_every_size() {
        for r in 1..=3 {
            let f = Frame {
                unshuffle: r,
                noise_map: false,
            };
            for h in 1..9 {
                for w in 1..9 {
                    let img: Vec<usize> = (0..h * w).collect();
                    let s = f.stack_input(&img, &[], h, w);
                    assert_eq!(s.len(), r * r * f.stack_dims(h, w).0 * f.stack_dims(h, w).1);
                    assert_eq!(f.image_from_stack(&s, h, w), img, "r {r}, {h} x {w}");
                }
            }
        }
    }
}
