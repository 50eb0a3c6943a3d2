"""The standby process: modelpack already loaded, a fresh fork for every command.

Starting Python and importing the docker SDK, requests, click and modelpack's stages takes
about 0.35 s, which is most of a build whose only change is a line of model code. A user who
runs `modelpack standby start` keeps one process with those modules loaded; the `modelpack`
executable then hands its arguments, environment, working folder and standard streams to it
over a Unix socket, and a forked child runs the command as the executable would have.

This package knows nothing of the commands: `place` finds the socket, `wire` frames the
messages, `client` is the executable's side (standard library only, so asking costs a few
milliseconds) and `server` forks and reports exit statuses. The CLI passes in what a child runs.
"""
