"""What the PyTorch scripts of test/gpu share: the small MLP they train, one training step, and asking for
a tensor that may cross the slice's wall."""
import torch


def mlp(dev):
    return torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096),
                               torch.nn.ReLU(), torch.nn.Linear(4096, 10)).to(dev)


def train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def try_tensor(label, nbytes, dev):
    """Allocates and touches nbytes on dev; what happened, with "raised" None, "OutOfMemoryError" or the
    name of any other exception (a failure of the wall's error path)."""
    try:
        t = torch.empty(nbytes // 4, dtype=torch.float32, device=dev)
        t.fill_(1.0)
        torch.cuda.synchronize()
        del t
        return {"what": label, "bytes": nbytes, "raised": None}
    except torch.OutOfMemoryError as e:
        return {"what": label, "bytes": nbytes, "raised": "OutOfMemoryError", "message": str(e).splitlines()[0][:160]}
    except Exception as e:
        return {"what": label, "bytes": nbytes, "raised": type(e).__name__, "message": str(e)[:160]}
