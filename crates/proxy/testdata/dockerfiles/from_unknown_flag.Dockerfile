FROM --foo=1 reg.example/a:1
