ARG E=
FROM reg.example/a:${E-d}${U-u}x
