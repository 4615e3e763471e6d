FROM reg.example/a:1
ONBUILD FROM reg.example/b:1
