ARG A=1 B=x$A
ARG C=$A
FROM reg.example/a:${B}$C
