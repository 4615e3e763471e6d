ARG V=1
FROM reg.example/a:$V
