//! The Revisited Oxford/Paris metrics against the protocol's own Python (`compute_ap` / `compute_map` of revisitop's
//! `evaluate.py`, run with NumPy from the project's venv) on a ground-truth pickle written by Python in the original
//! layout: the pickle round-trips, and mAP and mP@1/5/10 agree for Easy, Medium and Hard.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use delf_eval::revisitop::{GroundTruth, Setup, evaluate};

const SCRIPT: &str = r#"
import json, pickle, sys
import numpy as np

# revisitop evaluate.py, as published.
def compute_ap(ranks, nres):
    nimgranks = len(ranks)
    ap = 0
    recall_step = 1. / nres
    for j in np.arange(nimgranks):
        rank = ranks[j]
        if rank == 0:
            precision_0 = 1.
        else:
            precision_0 = float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.
    return ap

def compute_map(ranks, gnd, kappas=[]):
    map = 0.
    nq = len(gnd)
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = np.array(gnd[i]['ok'])
        if qgnd.shape[0] == 0:
            aps[i] = float('nan')
            prs[i, :] = float('nan')
            nempty += 1
            continue
        try:
            qgndj = np.array(gnd[i]['junk'])
        except:
            qgndj = np.empty(0)
        pos = np.arange(ranks.shape[0])[np.in1d(ranks[:,i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.in1d(ranks[:,i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while (ip < len(pos)):
                while (ij < len(junk) and pos[ip] > junk[ij]):
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = compute_ap(pos, len(qgnd))
        map = map + ap
        aps[i] = ap
        pos += 1
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    map = map / (nq - nempty)
    pr = pr / (nq - nempty)
    return map, aps, pr, prs

out_dir = sys.argv[1]
rng = np.random.RandomState(3)
n, nq = 60, 7
imlist = ['db_%03d' % i for i in range(n)]
qimlist = ['q_%d' % i for i in range(nq)]
gnd = []
for q in range(nq):
    perm = rng.permutation(n).tolist()
    ne, nh, nj = [(3, 2, 4), (1, 0, 0), (0, 3, 2), (5, 5, 5), (2, 1, 0), (0, 0, 3), (4, 0, 6)][q]
    gnd.append({'easy': perm[:ne], 'hard': perm[ne:ne + nh], 'junk': perm[ne + nh:ne + nh + nj],
                'bbx': [10.5, 20.0, 300.25, 400.0]})
pickle.dump({'imlist': imlist, 'qimlist': qimlist, 'gnd': gnd}, open(out_dir + '/gnd_test.pkl', 'wb'), protocol=2)
# Rankings: positives and junk scattered through a random order.
ranks = np.stack([rng.permutation(n) for _ in range(nq)], axis=1)
result = {'ranks': ranks.T.tolist()}
for setup in ['easy', 'medium', 'hard']:
    g = []
    for e in gnd:
        if setup == 'easy':
            g.append({'ok': e['easy'], 'junk': e['junk'] + e['hard']})
        elif setup == 'medium':
            g.append({'ok': e['easy'] + e['hard'], 'junk': e['junk']})
        else:
            g.append({'ok': e['hard'], 'junk': e['junk'] + e['easy']})
    m, aps, pr, prs = compute_map(ranks, g, [1, 5, 10])
    result[setup] = {'map': m, 'mp': pr.tolist(), 'aps': [None if np.isnan(a) else a for a in aps]}
json.dump(result, open(out_dir + '/expected.json', 'w'))
"#;

fn python() -> PathBuf {
    std::env::var_os("DELFRS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv/bin/python"))
}

#[test]
fn metrics_and_pickle_agree_with_the_published_python() {
    let dir = tempfile::tempdir().unwrap();
    let py = python();
    assert!(py.is_file(), "{} missing: run scripts/setup.sh", py.display());
    let out = Command::new(&py).arg("-c").arg(SCRIPT).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let gt = GroundTruth::load(&dir.path().join("gnd_test.pkl")).unwrap();
    assert_eq!(gt.imlist.len(), 60);
    assert_eq!(gt.qimlist[6], "q_6");
    assert_eq!(gt.gnd[0].bbx, Some([10.5, 20.0, 300.25, 400.0]));
    assert_eq!((gt.gnd[3].easy.len(), gt.gnd[3].hard.len(), gt.gnd[3].junk.len()), (5, 5, 5));

    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).unwrap()).unwrap();
    let ranks: Vec<Vec<usize>> = serde_json::from_value(expected["ranks"].clone()).unwrap();
    for (setup, name) in Setup::ALL.iter().zip(["easy", "medium", "hard"]) {
        let ours = evaluate(&gt, &ranks, *setup, &[1, 5, 10]);
        let theirs = &expected[name];
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(ours.map, theirs["map"].as_f64().unwrap()), "{name}: mAP {} vs {}", ours.map, theirs["map"]);
        for (i, (_, p)) in ours.mp.iter().enumerate() {
            assert!(close(*p, theirs["mp"][i].as_f64().unwrap()), "{name}: mP {p} vs {}", theirs["mp"][i]);
        }
        for (q, ap) in ours.aps.iter().enumerate() {
            match (ap, theirs["aps"][q].as_f64()) {
                (None, None) => {}
                (Some(a), Some(b)) => assert!(close(*a, b), "{name} q{q}: {a} vs {b}"),
                other => panic!("{name} q{q}: {other:?}"),
            }
        }
    }
}

#[test]
fn unreadable_ground_truth_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pkl");
    std::fs::write(&path, b"not a pickle").unwrap();
    let e = GroundTruth::load(&path).unwrap_err().to_string();
    assert!(e.contains("not a readable pickle"), "{e}");
    let e = GroundTruth::load(&dir.path().join("missing.pkl")).unwrap_err().to_string();
    assert!(e.contains("missing.pkl"), "{e}");
}
