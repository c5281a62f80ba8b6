//! SGD with momentum and weight decay, as the paper trains with, written out so that its state (one momentum
//! buffer per parameter) is saved in checkpoints and a resumed run continues bit for bit.

use std::collections::BTreeMap;

use tch::Tensor;

/// The optimiser and its state.
#[derive(Debug)]
pub struct Sgd {
    momentum: f64,
    weight_decay: f64,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// Prefix of the momentum buffers in checkpoints.
    pub const PREFIX: &'static str = "momentum.";

    /// A fresh optimiser.
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Self { momentum, weight_decay, buffers: BTreeMap::new() }
    }

    /// One update of every parameter that received a gradient (`buf = m * buf + g + wd * p; p -= lr * buf`; weight
    /// decay on weight matrices and kernels only, not on biases and BatchNorm), then clears the gradients.
    pub fn step(&mut self, params: &[(String, Tensor)], lr: f64) {
        tch::no_grad(|| {
            for (name, p) in params {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let mut d = grad.detach().copy();
                if self.weight_decay > 0.0 && p.dim() > 1 {
                    d += p * self.weight_decay;
                }
                let buf = match self.buffers.remove(name) {
                    Some(buf) => buf * self.momentum + &d,
                    None => d,
                };
                let mut p = p.shallow_clone();
                let _ = p.f_sub_(&(&buf * lr));
                self.buffers.insert(name.clone(), buf);
                let mut g = grad;
                let _ = g.f_zero_();
            }
        });
    }

    /// The buffers, named `momentum.<parameter>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.buffers.iter().map(|(n, t)| (format!("{}{n}", Self::PREFIX), t.shallow_clone())).collect()
    }

    /// Restores buffers saved by [`Sgd::state`] (other tensors are ignored), onto `device`.
    pub fn restore(&mut self, tensors: &[(String, Tensor)], device: tch::Device) {
        self.buffers = tensors
            .iter()
            .filter_map(|(n, t)| n.strip_prefix(Self::PREFIX).map(|n| (n.to_string(), t.to_device(device))))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_and_decay_follow_the_formula() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).view([1, 2]).set_requires_grad(true);
        let params = vec![("w".to_string(), p.shallow_clone())];
        let mut sgd = Sgd::new(0.9, 0.1);
        for _ in 0..2 {
            let loss = (&p * &p).sum(tch::Kind::Float);
            loss.backward();
            sgd.step(&params, 0.5);
        }
        // By hand: g1 = 2p0 + 0.1 p0 = 2.1 p0; p1 = p0 (1 - 0.5 * 2.1) = -0.05 p0;
        // g2 = 2.1 p1; buf2 = 0.9 * 2.1 p0 + 2.1 p1; p2 = p1 - 0.5 buf2.
        let p0 = [1.0f64, -2.0];
        let got: Vec<f32> = p.detach().flatten(0, -1).try_into().unwrap();
        for (k, &x0) in p0.iter().enumerate() {
            let p1 = -0.05 * x0;
            let buf2 = 0.9 * 2.1 * x0 + 2.1 * p1;
            let p2 = p1 - 0.5 * buf2;
            assert!((f64::from(got[k]) - p2).abs() < 1e-6, "{got:?}");
        }
        assert_eq!(sgd.state().len(), 1);
    }
}
