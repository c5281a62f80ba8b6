//! A shard's neighbour lists as packed columns (`CompactNeighbors`): the lengths of the lists, the answer's
//! distinct images once (ascending, delta-coded), and per neighbour its image's position in that table, its feature
//! and its squared distance. Written by index nodes when a search asks `compact`, read by the coordinator, which
//! checks everything it is handed.

use delf_index::Neighbor;
use delf_proto::v1 as pb;

/// Packs `lists` (each nearest first).
pub fn encode(lists: &[Vec<Neighbor>]) -> pb::CompactNeighbors {
    let total: usize = lists.iter().map(Vec::len).sum();
    let mut images: Vec<u32> = lists.iter().flatten().map(|n| n.image).collect();
    images.sort_unstable();
    images.dedup();
    let mut out = pb::CompactNeighbors {
        lengths: lists.iter().map(|l| l.len() as u32).collect(),
        image_deltas: Vec::with_capacity(images.len()),
        slots: Vec::with_capacity(total),
        features: Vec::with_capacity(total),
        distances: Vec::with_capacity(total),
    };
    let mut previous = 0;
    for &image in &images {
        out.image_deltas.push(image - previous);
        previous = image;
    }
    for n in lists.iter().flatten() {
        // Every neighbour's image is in the table.
        out.slots.push(images.binary_search(&n.image).unwrap_or_default() as u32);
        out.features.push(u32::from(n.feature));
        out.distances.push(n.distance);
    }
    out
}

/// Unpacks `nq` lists, checking that the columns agree, that every image is one `belongs` accepts (this shard's)
/// and every distance a finite number.
pub fn decode(c: pb::CompactNeighbors, nq: usize, belongs: impl Fn(u32) -> bool) -> Result<Vec<Vec<Neighbor>>, String> {
    if c.lengths.len() != nq {
        return Err(format!("{} lists for {nq} query descriptors", c.lengths.len()));
    }
    let total = c.lengths.iter().try_fold(0usize, |a, &n| a.checked_add(n as usize)).unwrap_or(usize::MAX);
    if [c.slots.len(), c.features.len(), c.distances.len()].iter().any(|&n| n != total) {
        return Err(format!(
            "columns of {}, {} and {} neighbours for lists of {total}",
            c.slots.len(),
            c.features.len(),
            c.distances.len()
        ));
    }
    let mut images = Vec::with_capacity(c.image_deltas.len());
    let mut image = 0u32;
    for (i, &d) in c.image_deltas.iter().enumerate() {
        if i > 0 && d == 0 {
            return Err("an image listed twice in the table".into());
        }
        image = image.checked_add(d).ok_or("an image number past 2^32")?;
        if !belongs(image) {
            return Err(format!("image {image} does not belong to this shard"));
        }
        images.push(image);
    }
    let mut lists = Vec::with_capacity(nq);
    let mut at = 0;
    for &len in &c.lengths {
        let mut list = Vec::with_capacity(len as usize);
        for i in at..at + len as usize {
            let image =
                *images.get(c.slots[i] as usize).ok_or_else(|| format!("slot {} past the table", c.slots[i]))?;
            let feature =
                u16::try_from(c.features[i]).map_err(|_| format!("feature {} out of range", c.features[i]))?;
            let distance = c.distances[i];
            if !distance.is_finite() {
                return Err(format!("distance {distance}"));
            }
            list.push(Neighbor { distance, image, feature });
        }
        at += len as usize;
        lists.push(list);
    }
    Ok(lists)
}

#[cfg(test)]
mod tests {
    use super::*;
    use delf_proto::prost::Message;

    fn lists() -> Vec<Vec<Neighbor>> {
        let n = |distance, image, feature| Neighbor { distance, image, feature };
        vec![vec![n(0.1, 12, 3), n(0.4, 4, 900), n(0.5, 12, 7)], vec![], vec![n(0.2, 4_000_000_000, 1)]]
    }

    #[test]
    fn round_trips_and_is_smaller() {
        let packed = encode(&lists());
        assert_eq!(packed.image_deltas, vec![4, 8, 4_000_000_000 - 12]);
        assert_eq!(decode(packed.clone(), 3, |_| true).unwrap(), lists());
        let plain: Vec<pb::NeighborList> = lists()
            .iter()
            .map(|l| pb::NeighborList {
                neighbors: l
                    .iter()
                    .map(|n| pb::Neighbor {
                        image: n.image,
                        feature: u32::from(n.feature),
                        distance: n.distance,
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect();
        let plain = pb::ShardSearchResponse { lists: plain, ..Default::default() };
        assert!(packed.encoded_len() < plain.encoded_len());
    }

    #[test]
    fn refuses_what_does_not_add_up() {
        let good = encode(&lists());
        let bad = |f: &dyn Fn(&mut pb::CompactNeighbors)| {
            let mut c = good.clone();
            f(&mut c);
            decode(c, 3, |_| true).unwrap_err()
        };
        assert!(bad(&|c| c.lengths.push(0)).contains("lists for 3"));
        assert!(bad(&|c| c.lengths[0] = 4).contains("columns"));
        assert!(bad(&|c| c.slots[0] = 9).contains("past the table"));
        assert!(bad(&|c| c.features[0] = 70_000).contains("out of range"));
        assert!(bad(&|c| c.distances[1] = f32::NAN).contains("distance"));
        assert!(bad(&|c| c.image_deltas[1] = 0).contains("twice"));
        assert!(bad(&|c| c.image_deltas[2] = u32::MAX).contains("2^32"));
        assert!(decode(good, 3, |image| image % 2 == 1).unwrap_err().contains("does not belong"));
    }
}
