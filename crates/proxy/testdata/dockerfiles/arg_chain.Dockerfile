ARG A=1
ARG B=x$A
FROM reg.example/a:$B
