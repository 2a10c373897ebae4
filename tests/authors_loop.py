"""The authors' loop, re-implemented line by line in plain torch as PAPER-PROTOCOL.md describes
it (forward routine with one application before the loop, whole-batch residual with ``1e-5 +``,
one more application with gradients, a backward hook that runs the same routine on
``u -> u J + g`` from ``u = g`` with J taken at that last application's output). The fidelity
tests check deqexp's presets against it; ``make bench`` times deqexp against it."""
import torch
import torch.nn.functional as F


def authors_solver(f, z0, tol, max_iter):
    """Their forward routine: f once before the loop, then up to max_iter times."""
    f0 = f(z0)
    for _ in range(max_iter):
        z = f0
        f0 = f(z)
        if (f0 - z).norm() / (1e-5 + f0.norm()) < tol:
            break
    return f0


def authors_deq(f, z_init, tol, max_iter):
    """Their DEQ layer: solve without gradients, one application with them, backward hook."""
    with torch.no_grad():
        z = authors_solver(f, z_init, tol, max_iter)
    z = f(z)
    if z.requires_grad:
        z0 = z.clone().detach().requires_grad_()
        f0 = f(z0)

        def hook(grad):
            return authors_solver(
                lambda u: torch.autograd.grad(f0, z0, u, retain_graph=True)[0] + grad,
                grad, tol, max_iter)

        z.register_hook(hook)
    return z


class DenseRef:
    """E1's network: z = tanh(W z + U y + b), output V z + c + Q y."""

    def __init__(self, p, tol, max_iter):
        self.p, self.tol, self.max_iter = p, tol, max_iter

    def __call__(self, y):
        p = self.p
        inj = y @ p["U"].T + p["b"]
        z = authors_deq(lambda z: torch.tanh(z @ p["W"].T + inj), torch.zeros_like(inj),
                        self.tol, self.max_iter)
        return z @ p["V"].T + p["c"] + y @ p["Q"].T


def authors_e1(p, train_q: bool, lr: float, tol: float, max_iter: int):
    """Their E1 training from parameters ``p`` (Q fixed where ``train_q`` is False, as for
    their random init): the network and one epoch, a full-batch Adam step on the MSE."""
    trained = [n for n in "WUbVcQ" if n != "Q" or train_q]
    for n in trained:
        p[n].requires_grad_()
    net = DenseRef(p, tol, max_iter)
    opt = torch.optim.Adam([p[n] for n in trained], lr=lr)

    def epoch(x, y):
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()

    return net, epoch


class ConvRef:
    """E2's network: z = relu(conv_W z + conv_U y), output relu(conv_V z + conv_Q y)."""

    def __init__(self, p, tol, max_iter):
        self.p, self.tol, self.max_iter = p, tol, max_iter

    def __call__(self, y):
        p = self.p
        conv = lambda x, w: F.conv2d(x, w, padding=w.shape[-1] // 2)  # noqa: E731
        inj = conv(y, p["U"])
        z = authors_deq(lambda z: torch.relu(conv(z, p["W"]) + inj), torch.zeros_like(inj),
                        self.tol, self.max_iter)
        return torch.relu(conv(z, p["V"]) + conv(y, p["Q"]))
