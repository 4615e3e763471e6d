ARG V
FROM reg.example/a:${V:?needV}
