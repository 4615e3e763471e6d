from reg.example/a:1 as One
cOpY --FROM=reg.example/b:1 /f /g
