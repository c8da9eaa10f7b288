"""Where function instances come from: local processes or Kubernetes pods.

`base.Backend` is the contract the invoker, the idle loop and the autoscaler use;
`local.LocalBackend` runs instances as runtime processes on loopback.
"""
