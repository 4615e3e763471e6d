ARG V=1
FROM reg.example/a:1
ARG V=2
FROM reg.example/b:$V
