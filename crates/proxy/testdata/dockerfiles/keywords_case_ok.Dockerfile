from reg.example/a:1 as One
cOpY --from=reg.example/b:1 /f /g
FrOm one
