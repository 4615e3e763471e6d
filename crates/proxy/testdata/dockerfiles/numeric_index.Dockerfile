FROM reg.example/a:1
FROM reg.example/b:1
COPY --from=0 /f /g
COPY --from=+0 /f /h
