FROM reg.example/a:1 AS base
ONBUILD COPY --from=reg.example/trig:1 /f /g
FROM reg.example/b:1
